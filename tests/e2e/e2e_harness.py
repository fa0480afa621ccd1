"""Host side of the real-kernel end-to-end suite.

Installs what the suite needs (Debian packages, virtme-ng from PyPI), builds test drivers from Debian's
falcosecurity-scap-dkms sources against the packaged 6.1 kernel headers, boots that kernel under QEMU with
virtme-ng (the host's / mounted read-only) and runs tests/e2e/e2e_guest.py inside it. The guest prints one
`E2E-RESULT <json>` line per scenario; `parse_results` turns them into `ScenarioResult`s.

Used by tests/e2e/conftest.py and, as a script, by scripts/e2e-demo. Runs as root on Debian 12 amd64.

Environment: E2E_WORK (work directory, default ~/.cache/falco-driver-loader-e2e), E2E_ACCEL (kvm or tcg; by
default KVM when /dev/kvm can run a stock kernel, else TCG), E2E_TIMEOUT (seconds for the whole VM run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from e2e_guest import GUEST_DONE, GUEST_READY, RESULT_PREFIX

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent
GUEST_SCRIPT = HERE / "e2e_guest.py"

# What the suite needs on the host; .ci/apt-packages lists the same names so CI installs them up front.
PACKAGES = (
    "qemu-system-x86",
    "linux-image-amd64",
    "linux-headers-amd64",
    "dkms",
    "falcosecurity-scap-dkms",
    "kmod",
    "busybox-static",
    "file",
    "iproute2",
    "gcc",
    "make",
    "python3-venv",
    # The image_kmod scenario's image (tests/image_harness.py): buildah, and mmdebstrap for its base where no
    # registry is reachable.
    "buildah",
    "mmdebstrap",
)
KERNEL_METAPACKAGE = "linux-image-amd64"
SCAP_PACKAGE = "falcosecurity-scap-dkms"
VIRTME_NG = "virtme-ng==1.42"


@dataclasses.dataclass(frozen=True)
class TestDriver:
    """A `falco` driver built from the scap sources, with the API/schema versions the real release reports."""

    version: str
    api_version: str
    schema_version: str

    @property
    def dkms_name(self) -> str:
        return f"falco-{self.version}"


# API/schema per driver tag, from falcosecurity/libs (see versioning-and-artifacts reference, "Version history").
TEST_DRIVERS = (
    TestDriver("8.0.0+driver", "8.0.3", "3.5.0"),
    TestDriver("8.1.0+driver", "8.0.3", "3.6.1"),
    TestDriver("9.0.0+driver", "8.0.4", "4.0.1"),
)
# The version whose sources the guest has under /usr/src, as a Falco 0.41 package would install them.
INSTALLED_SOURCES_VERSION = "8.1.0+driver"


class E2EUnavailable(Exception):
    """This machine cannot run the suite (not root, not Debian amd64, packages not installable)."""


class E2ESetupError(Exception):
    """Preparing the suite failed on a machine that should be able to run it."""


@dataclasses.dataclass(frozen=True)
class Kernel:
    release: str
    vmlinuz: Path
    build_dir: Path


@dataclasses.dataclass(frozen=True)
class DriverSet:
    """Everything the guest needs, as paths the guest also sees (the host / is its root)."""

    modules: Dict[str, Path]
    variants: Dict[str, Path]
    scap_module: Path
    sources: Dict[str, Path]


@dataclasses.dataclass(frozen=True)
class ScenarioResult:
    name: str
    ok: bool
    checks: Tuple[dict, ...]
    commands: Tuple[dict, ...]

    def report(self) -> str:
        lines = [f"scenario {self.name}: {'PASS' if self.ok else 'FAIL'}"]
        for check in self.checks:
            mark = "ok  " if check["ok"] else "FAIL"
            detail = f" ({check['detail']})" if check.get("detail") else ""
            lines.append(f"  [{mark}] {check['what']}{detail}")
        for command in self.commands:
            lines.append(f"  $ {' '.join(command['argv'])}  -> exit {command['exit']}")
            for stream in ("stdout", "stderr"):
                text = command.get(stream, "").rstrip()
                if text:
                    lines.append(f"    {stream}:")
                    lines.extend("      " + line for line in text.splitlines())
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class GuestRun:
    results: Dict[str, ScenarioResult]
    finished: bool
    exit_status: int
    log_path: Path
    accel: str

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def say(message: str) -> None:
    print(f"[e2e] {message}", file=sys.stderr, flush=True)


def work_dir() -> Path:
    """Outside the checkout, and not under /var/tmp or /var/cache: the guest gets empty tmpfs mounts there."""
    path = Path(os.environ.get("E2E_WORK") or Path.home() / ".cache" / "falco-driver-loader-e2e")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(argv: Sequence[str], *, what: str, env: Optional[dict] = None, cwd: Optional[Path] = None,
         timeout: float = 1800) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise E2ESetupError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")
    return proc.stdout


def require_host() -> None:
    if os.geteuid() != 0:
        raise E2EUnavailable("the real-kernel e2e suite needs root (apt-get, DKMS, QEMU)")
    if not shutil.which("apt-get") or not shutil.which("dpkg-query"):
        raise E2EUnavailable("the real-kernel e2e suite needs a Debian 12 host (apt-get/dpkg not found)")
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    if arch != "amd64":
        raise E2EUnavailable(f"the real-kernel e2e suite needs an amd64 host, this one is {arch or 'unknown'}")


def missing_packages(packages: Sequence[str]) -> List[str]:
    missing = []
    for package in packages:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
        if status.stdout.strip() != "install ok installed":
            missing.append(package)
    return missing


def ensure_packages(packages: Sequence[str] = PACKAGES) -> None:
    missing = missing_packages(packages)
    if not missing:
        return
    say(f"installing Debian packages: {' '.join(missing)}")
    # INITRD=No: the VM boots virtme-ng's own initramfs, so the kernel package need not build one (~25 s).
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", INITRD="No")
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    for argv in (["apt-get", *lock, "update", "-q"],
                 ["apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", *missing]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise E2EUnavailable(
                f"cannot install {' '.join(missing)}: {' '.join(argv)} exited {proc.returncode}\n{tail}"
            )


def kernel_release_from_depends(depends: str) -> str:
    """`linux-image-6.1.0-56-amd64 (= 6.1.192-2)` -> `6.1.0-56-amd64`: the ABI drifts, so never hard-code it."""
    match = re.search(r"linux-image-(\d[^\s,()|]*)", depends)
    if not match:
        raise E2ESetupError(f"{KERNEL_METAPACKAGE} depends on no linux-image-<release> package: {depends!r}")
    return match.group(1)


def installed_kernel() -> Kernel:
    depends = _run(["dpkg-query", "-W", "-f=${Depends}", KERNEL_METAPACKAGE], what="reading the kernel package")
    release = kernel_release_from_depends(depends)
    kernel = Kernel(release, Path(f"/boot/vmlinuz-{release}"), Path(f"/lib/modules/{release}/build"))
    for path in (kernel.vmlinuz, kernel.build_dir):
        if not path.exists():
            raise E2ESetupError(f"{path} is missing although {KERNEL_METAPACKAGE} points at {release}")
    return kernel


def ensure_virtme_ng(work: Path) -> Path:
    """A venv with the pinned virtme-ng; returns its bin directory (vng runs virtme-run through PATH)."""
    venv = work / "virtme-ng-venv"
    vng = venv / "bin" / "vng"
    wanted = VIRTME_NG.split("==")[1]
    if vng.exists():
        version = subprocess.run([str(vng), "--version"], capture_output=True, text=True).stdout
        if wanted in version.split():
            return vng.parent
    say(f"installing {VIRTME_NG} from PyPI into {venv}")
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(venv)], what="creating the virtme-ng venv")
    _run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", VIRTME_NG],
         what=f"pip install {VIRTME_NG}")
    return vng.parent


def scap_sources() -> Path:
    version = _run(["dpkg-query", "-W", "-f=${Version}", SCAP_PACKAGE], what="reading the scap package version")
    upstream = version.strip().rsplit("-", 1)[0]
    path = Path(f"/usr/src/scap-{upstream}")
    if not (path / "dkms.conf").exists():
        raise E2ESetupError(f"{path} has no dkms.conf although {SCAP_PACKAGE} {version} is installed")
    return path


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _replace_once(text: str, pattern: str, replacement: str, where: str) -> str:
    new, count = re.subn(pattern, lambda _: replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise E2ESetupError(f"expected exactly one match of {pattern!r} in {where}, found {count}")
    return new


def rename_makefile(text: str, name: str) -> str:
    text = _replace_once(text, r"^scap-y\b", f"{name}-y", "Makefile")
    return _replace_once(text, r"^obj-m \+= scap\.o$", f"obj-m += {name}.o", "Makefile")


def rename_driver_config(text: str, name: str, driver: TestDriver) -> str:
    for macro, value in (("DRIVER_VERSION", f'"{driver.version}"'), ("DRIVER_NAME", f'"{name}"'),
                         ("DRIVER_DEVICE_NAME", f'"{name}"')):
        text = _replace_once(text, rf"^#define {macro} .*$", f"#define {macro} {value}", "driver_config.h")
    for kind, version in (("API", driver.api_version), ("SCHEMA", driver.schema_version)):
        for part, number in zip(("MAJOR", "MINOR", "PATCH"), version.split(".")):
            macro = f"PPM_{kind}_CURRENT_VERSION_{part}"
            text = _replace_once(text, rf"^#define {macro} .*$", f"#define {macro} {number}", "driver_config.h")
    return text


def rename_dkms_conf(text: str, name: str, version: str) -> str:
    for key, value in (("PACKAGE_NAME", name), ("PACKAGE_VERSION", version), ("BUILT_MODULE_NAME[0]", name)):
        text = _replace_once(text, rf"^{re.escape(key)}=.*$", f'{key}="{value}"', "dkms.conf")
    return text


def write_driver_sources(scap_src: Path, dest: Path, driver: TestDriver) -> None:
    """A copy of the scap sources that builds a `falco` module reporting `driver`'s version, API and schema."""
    shutil.copytree(scap_src, dest)
    edits: Tuple[Tuple[str, Callable[[str], str]], ...] = (
        ("Makefile", lambda t: rename_makefile(t, "falco")),
        ("driver_config.h", lambda t: rename_driver_config(t, "falco", driver)),
        ("dkms.conf", lambda t: rename_dkms_conf(t, "falco", driver.version)),
    )
    for filename, edit in edits:
        path = dest / filename
        path.write_text(edit(path.read_text()))


def _shifted_release(release: str) -> str:
    """Another kernel release of the same length and flavour: each digit before the flavour moved up by one."""
    head, dash, flavour = release.rpartition("-") if "-" in release else (release, "", "")
    return re.sub(r"\d", lambda m: str((int(m.group()) + 1) % 10), head) + dash + flavour


def flip_crc(module: bytes, symbol: str) -> bytes:
    """Invert the CRC the module records for `symbol` in `__versions` (64-byte records: CRC, then the name)."""
    from elftools.elf.elffile import ELFFile

    section = ELFFile(io.BytesIO(module)).get_section_by_name("__versions")
    if section is None:
        raise E2ESetupError("the module has no __versions section")
    data = section.data()
    for offset in range(0, len(data), 64):
        if data[offset + 8:offset + 64].split(b"\0", 1)[0] == symbol.encode():
            at = section["sh_offset"] + offset
            return module[:at] + bytes(b ^ 0xFF for b in module[at:at + 4]) + module[at + 4:]
    raise E2ESetupError(f"the module records no CRC for {symbol}")


def module_variants(module: bytes, release: str) -> Dict[str, bytes]:
    """Altered copies of a good module built for `release`.

    vermagic-flags: the flags upper-cased (the kernel refuses it with "version magic ... should be ...").
    other-release: vermagic names another release; the CRCs still match, so the kernel (modversions) loads it.
    other-release-abi: that, with module_layout's CRC changed, as a build for another kernel's ABI (the kernel
    refuses it with "disagrees about version of symbol module_layout").
    truncated: the first 4 KiB at most (the kernel refuses it with "Invalid ELF section header overflow").
    """
    marker = f"vermagic={release} ".encode()
    start = module.find(marker)
    if start < 0 or module.find(marker, start + 1) >= 0:
        raise E2ESetupError(f"expected exactly one 'vermagic={release} ' in the built module")
    flags_start = start + len(marker)
    flags_end = module.index(b"\0", flags_start)
    flags = module[flags_start:flags_end]
    other_release = module.replace(marker, f"vermagic={_shifted_release(release)} ".encode(), 1)
    variants = {
        "vermagic-flags": module[:flags_start] + flags.upper() + module[flags_end:],
        "other-release": other_release,
        "other-release-abi": flip_crc(other_release, "module_layout"),
        "truncated": module[:min(4096, len(module) // 2)],
    }
    for name, data in variants.items():
        if data == module:
            raise E2ESetupError(f"the {name} variant is identical to the good module")
    return variants


def _modinfo(ko: Path, field: str) -> str:
    return _run(["modinfo", "-F", field, str(ko)], what=f"modinfo {field}").strip()


def _build_module(sources: Path, kernel: Kernel, module_name: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        tree = Path(tmp) / "build"
        shutil.copytree(sources, tree)
        _run(["make", "-C", str(kernel.build_dir), f"M={tree}", f"-j{min(os.cpu_count() or 1, 2)}", "modules"],
             what=f"building {module_name}.ko from {sources.name}")
        shutil.copyfile(tree / f"{module_name}.ko", dest)


def build_test_drivers(work: Path, kernel: Kernel) -> DriverSet:
    """Build falco 8.0.0/8.1.0/9.0.0 and the stock scap module; reuse them while kernel and sources are unchanged."""
    scap_src = scap_sources()
    key = hashlib.sha256(
        (kernel.release + tree_digest(scap_src) + hashlib.sha256(Path(__file__).read_bytes()).hexdigest()).encode()
    ).hexdigest()[:16]
    root = work / "drivers" / kernel.release / key
    driver_set = DriverSet(
        modules={d.version: root / f"falco-{d.version}.ko" for d in TEST_DRIVERS},
        variants={name: root / f"falco-8.0.0+driver.{name}.ko"
                  for name in ("vermagic-flags", "other-release", "other-release-abi", "truncated")},
        scap_module=root / "scap.ko",
        sources={d.version: root / "src" / d.dkms_name for d in TEST_DRIVERS},
    )
    if (root / "complete").exists():
        return driver_set
    say(f"building test drivers for {kernel.release} from {scap_src} into {root}")
    shutil.rmtree(work / "drivers", ignore_errors=True)  # one set of builds is enough; the key says which
    root.mkdir(parents=True)
    for driver in TEST_DRIVERS:
        write_driver_sources(scap_src, driver_set.sources[driver.version], driver)
        ko = driver_set.modules[driver.version]
        _build_module(driver_set.sources[driver.version], kernel, "falco", ko)
        got = {field: _modinfo(ko, field) for field in ("name", "version", "api_version", "schema_version")}
        want = {"name": "falco", "version": driver.version, "api_version": driver.api_version,
                "schema_version": driver.schema_version}
        if got != want:
            raise E2ESetupError(f"{ko.name} reports {got}, expected {want}")
    _build_module(scap_src, kernel, "scap", driver_set.scap_module)
    good = driver_set.modules["8.0.0+driver"]
    if not _modinfo(good, "vermagic").startswith(kernel.release + " "):
        raise E2ESetupError(f"{good.name} was not built for {kernel.release}")
    for name, data in module_variants(good.read_bytes(), kernel.release).items():
        driver_set.variants[name].write_bytes(data)
    (root / "complete").write_text(key + "\n")
    return driver_set


def kvm_usable() -> bool:
    """KVM only when /dev/kvm is real VT-x/AMD-V: kvm-pvm cannot run a stock kernel (it never leaves the
    decompressor), and QEMU aborts on its MSRs with -cpu host."""
    return os.access("/dev/kvm", os.R_OK | os.W_OK) and not Path("/sys/module/kvm_pvm").exists()


def choose_accels() -> List[str]:
    """Accelerators to try in order; E2E_ACCEL=kvm|tcg forces one."""
    forced = os.environ.get("E2E_ACCEL", "auto")
    if forced in ("kvm", "tcg"):
        return [forced]
    return ["kvm", "tcg"] if kvm_usable() else ["tcg"]


def parse_results(text: str) -> Dict[str, ScenarioResult]:
    results = {}
    for raw in text.splitlines():
        line = raw.strip("\r\n ")
        index = line.find(RESULT_PREFIX)
        if index < 0:
            continue
        try:
            doc = json.loads(line[index + len(RESULT_PREFIX):])
        except ValueError:
            continue
        results[doc["scenario"]] = ScenarioResult(
            name=doc["scenario"], ok=bool(doc["ok"]),
            checks=tuple(doc.get("checks", ())), commands=tuple(doc.get("commands", ())),
        )
    return results


def prepare_image(work: Path) -> dict:
    """For the image_kmod scenario: the loader image built (or reused) by tests/image_harness.py, its root exported
    where the guest sees it, and its environment and entrypoint; or why there is none."""
    sys.path.insert(0, str(CHECKOUT / "tests"))
    import image_harness

    try:
        image = image_harness.ensure_image()
        root = image_harness.export_root(image, work / "image")
    except (image_harness.ImageUnavailable, image_harness.ImageSetupError) as exc:
        say(f"no image for the image_kmod scenario: {exc}")
        return {"error": str(exc)}
    return {"ref": image.ref, "root": str(root), "env": list(image.env), "entrypoint": list(image.entrypoint)}


def guest_config(kernel: Kernel, drivers: DriverSet, pycache: Path, image: Optional[dict] = None) -> dict:
    return {
        "checkout": str(CHECKOUT),
        "python": sys.executable,
        "kernel_release": kernel.release,
        "modules": {version: str(path) for version, path in drivers.modules.items()},
        "variants": {name: str(path) for name, path in drivers.variants.items()},
        "scap_module": str(drivers.scap_module),
        "sources": {version: str(path) for version, path in drivers.sources.items()},
        "installed_sources_version": INSTALLED_SOURCES_VERSION,
        "pycache_prefix": str(pycache),
        "image": image,
    }


def boot_guest(work: Path, kernel: Kernel, drivers: DriverSet, scenarios: Sequence[str],
               *, timeout: float = float(os.environ.get("E2E_TIMEOUT", "2400"))) -> GuestRun:
    """One VM: boot, run the scenarios in order, power off. Retries with TCG when a KVM boot yields nothing."""
    vng_bin = ensure_virtme_ng(work)
    config_path = work / "guest-config.json"
    # Bytecode the guest compiles is kept on the host: compiling every module again costs a minute under TCG.
    pycache = work / "guest-pycache"
    pycache.mkdir(exist_ok=True)
    image = prepare_image(work) if "image_kmod" in scenarios else None
    config_path.write_text(json.dumps(guest_config(kernel, drivers, pycache, image), indent=2))
    command = " ".join([sys.executable, str(GUEST_SCRIPT), str(config_path), *scenarios])
    run: Optional[GuestRun] = None
    for accel in choose_accels():
        log_path = work / f"guest-{accel}.log"
        argv = [str(vng_bin / "vng"), "--run", str(kernel.vmlinuz), "--memory", "2G", "--cpus", "2",
                # /root holds the loader's cache (~/.falco); the overlay makes it writable in the guest only.
                "--overlay-rwdir", "/root", "--rwdir", str(pycache), "--exec", command]
        if accel == "tcg":
            argv.insert(1, "--disable-kvm")
        say(f"booting {kernel.vmlinuz} with virtme-ng ({accel}); guest log: {log_path}")
        started = time.monotonic()
        env = dict(os.environ, PATH=f"{vng_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        with open(log_path, "w") as log:
            try:
                status = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work,
                                        timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                status = -1
                log.write(f"\n[e2e] the VM did not finish within {timeout:.0f} s\n")
        text = log_path.read_text(errors="replace")
        run = GuestRun(parse_results(text), GUEST_DONE in text, status, log_path, accel)
        say(f"VM finished in {time.monotonic() - started:.0f} s with exit status {status}, "
            f"{len(run.results)} scenario result(s)")
        if GUEST_READY in text:
            return run
    assert run is not None
    return run


def prepare() -> Tuple[Path, Kernel, DriverSet]:
    """Everything before the boot. Raises E2EUnavailable when this machine cannot run the suite."""
    require_host()
    ensure_packages()
    work = work_dir()
    kernel = installed_kernel()
    return work, kernel, build_test_drivers(work, kernel)


def demo() -> int:
    """scripts/e2e-demo: the loader's main job (download, verify, load) on Debian's real kernel."""
    try:
        work, kernel, drivers = prepare()
    except E2EUnavailable as exc:
        say(f"cannot run the demo here: {exc}")
        return 2
    run = boot_guest(work, kernel, drivers, ["download_verify_load"])
    result = run.results.get("download_verify_load")
    if result is None:
        say(f"the guest printed no result; last lines of {run.log_path}:\n{run.log_tail()}")
        return 1
    print(f"\n=== falco-driver-loader on Debian's kernel {kernel.release}, booted in QEMU ({run.accel}) ===")
    print(f"The guest serves a driver mirror on its own 127.0.0.1 (it has no network device): falco modules built\n"
          f"from Debian's {SCAP_PACKAGE} sources, each with a .sha256 sidecar, named by the loader's printenv.")
    for command in result.commands:
        argv = command["argv"]
        shown = ["falco-driver-loader", *argv[3:]] if argv[1:3] == ["-m", "driver_loader"] else argv
        print(f"\n$ {' '.join(shown)}")
        for stream in ("stderr", "stdout"):
            if command.get(stream, "").strip():
                print(command[stream].rstrip())
        print(f"(exit status {command['exit']})")
    print("\nChecked in the guest afterwards:")
    for check in result.checks:
        print(f"  [{'ok' if check['ok'] else 'FAIL'}] {check['what']}")
    print(f"\n{'PASS' if result.ok else 'FAIL'}. Full guest log: {run.log_path}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(demo())
