"""Host side of the second real stack: Debian 13 (trixie), its 6.12 kernel, today's driver and Falco's libscap.

Beside the 6.1 stack (e2e_harness.py), which runs on the host's own / and Debian 12's 2022 driver sources, this
one proves three more things: a second distro and kernel generation, today's driver (falcosecurity-scap-dkms
0.20.0: API 8.0.3, schema 3.5.0), and that what the loader loads or hands over works for Falco's userspace:
libscap 0.20 (libfalcosecurity0t64), through a small consumer (scap_count.c) built against it.

Everything is made here, on the host, and cached under work_dir()/trixie, each piece keyed by what it depends on:
  root-<key>/     a trixie root made with mmdebstrap from the host's own Debian mirror (read from its apt
                  sources): kernel and headers, gcc/clang/llvm, dkms, python3 and the loader's dependencies, the two
                  falcosecurity packages, and the falcosecurity-libs source package with its build dependencies;
  build-<key>/    built in that root (a chroot in a private mount namespace, so no mount outlives the build):
                  drivers/  `scap` modules and legacy eBPF probes from the 0.20.0 sources, relabelled with
                            upstream-style versions and, for the API/schema scenarios, other API/schema versions;
                  engine/   libscap_engine_bpf rebuilt from Debian's source with bpf_engine_mmap.patch (libscap
                            0.20 maps each perf buffer twice, overlapping, which kernels with the CVE-2025-38563
                            fix refuse: Debian's 6.12 since 6.12.43; libs 0.22.0 fixed it upstream);
                  consumer/ scap_count, built against the root's libscap.
The root is then booted under QEMU with virtme-ng (9p, read-only, tmpfs overlays), with the checkout and the
builds mounted read-only, and tests/e2e/e2e_guest_trixie.py runs the scenarios there. Traffic in the guest goes
only to its loopback (it has no network device).

Run as root on Debian 12 amd64; `python3 tests/e2e/e2e_trixie.py` is the demo's second half.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import e2e_harness as harness
from e2e_guest import GUEST_DONE, GUEST_READY
from e2e_harness import E2ESetupError, E2EUnavailable, TestDriver, say

HERE = Path(__file__).resolve().parent
GUEST_SCRIPT_NAME = "e2e_guest_trixie.py"
CONSUMER_SOURCE = HERE / "scap_count.c"
ENGINE_PATCH = HERE / "bpf_engine_mmap.patch"

SUITE = "trixie"
# The loader's runtime dependencies (pyproject.toml), as Debian packages: the guest runs the checkout with the
# root's own python3, as the 6.1 guest runs it with the host's.
LOADER_PYTHON_PACKAGES = (
    "python3-requests", "python3-packaging", "python3-distro", "python3-pyelftools", "python3-click",
    "python3-structlog", "python3-yaml",
)
ROOT_PACKAGES = (
    "linux-image-amd64", "linux-headers-amd64", "kmod", "dkms", "gcc", "make", "clang", "llvm", "libelf-dev",
    "falcosecurity-scap-dkms", "libfalcosecurity0-dev",
    # libfalcosecurity0-dev's headers include uthash.h without depending on it; pkg-config finds the libraries.
    "uthash-dev", "pkgconf",
    "python3", *LOADER_PYTHON_PACKAGES,
    "procps", "iproute2", "busybox", "xz-utils", "ca-certificates",
    # apt-get source, and the bpf engine's rebuild.
    "dpkg-dev", "cmake",
)
LIBS_SOURCE_PACKAGE = "falcosecurity-libs"
# Guest paths: created in the root, mounted by virtme-ng.
GUEST_CHECKOUT = "/e2e/checkout"
GUEST_BUILD = "/e2e/build"
GUEST_RUN = "/e2e/run"
DEB_SRC = "/e2e/deb-src"
# Inside the root, after the packages: build the libs' dependencies, fetch their source, drop Debian's DKMS
# registration of scap (the scenarios start from a node with no driver installed; /usr/src/scap-* stays).
ROOT_HOOKS = (
    ("--chrooted-customize-hook", f"apt-get build-dep -y -q --no-install-recommends {LIBS_SOURCE_PACKAGE}"),
    ("--chrooted-customize-hook", f"mkdir -p {DEB_SRC} && cd {DEB_SRC} && apt-get source -q {LIBS_SOURCE_PACKAGE}"),
    ("--chrooted-customize-hook", 'for d in /usr/src/scap-*; do dkms remove "scap/${d#/usr/src/scap-}" --all; done'),
    ("--chrooted-customize-hook", f"mkdir -p {GUEST_CHECKOUT} {GUEST_BUILD} {GUEST_RUN} && apt-get clean"),
)
HOST_PACKAGES = ("mmdebstrap",)


@dataclasses.dataclass(frozen=True)
class Variant:
    """A `scap` driver from the 0.20.0 sources reporting `driver`'s version, API and schema; `probe` also builds
    the legacy eBPF probe."""

    name: str
    driver: TestDriver
    probe: bool


# 8.0.0+driver is what upstream calls the 0.20 driver (API 8.0.3, schema 3.5.0). 8.1.0+driver is the same sources
# relabelled for the range and in-use scenarios, keeping 0.20's API and schema so that libscap 0.20 opens it.
VARIANTS = (
    Variant("8.0.0", TestDriver("8.0.0+driver", "8.0.3", "3.5.0"), probe=True),
    Variant("8.1.0", TestDriver("8.1.0+driver", "8.0.3", "3.5.0"), probe=False),
    Variant("api-9", TestDriver("8.0.0+driver", "9.0.3", "3.5.0"), probe=True),
    Variant("schema-4", TestDriver("8.0.0+driver", "8.0.3", "4.5.0"), probe=True),
    Variant("schema-3.6", TestDriver("8.0.0+driver", "8.0.3", "3.6.0"), probe=True),
)
DKMS_SOURCES_VARIANT = "8.1.0"
# Bump when build_drivers or write_variant_sources changes what they make: the drivers' cache key.
DRIVERS_RECIPE = 2


@dataclasses.dataclass(frozen=True)
class Stack:
    """Everything the guest needs; `builds` is mounted at GUEST_BUILD."""

    root: Path
    kernel_release: str
    vmlinuz: Path
    builds: Path
    drivers: str  # below builds
    engine: str
    consumer: str
    scap_source_version: str
    libs_version: str


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- the mirror
def _deb822_stanzas(text: str) -> List[Dict[str, str]]:
    stanzas, current = [], {}
    key = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
        elif line[0] in " \t" and key:
            current[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine's apt uses (the first `deb` URI that serves the `main` archive, not the
    security one), so the trixie root comes from the same mirror as the host's own packages."""
    candidates: List[Tuple[str, List[str]]] = []
    sources = sorted((apt_dir / "sources.list.d").glob("*.list")) + sorted((apt_dir / "sources.list.d").glob("*.sources"))
    for path in [apt_dir / "sources.list", *sources]:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in _deb822_stanzas(text):
                if "deb" in stanza.get("types", "").split() and stanza.get("enabled", "yes").lower() != "no":
                    for uri in stanza.get("uris", "").split():
                        candidates.append((uri, stanza.get("suites", "").split()))
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    candidates.append((words[1], [words[2]]))
    for uri, suites in candidates:
        if uri.startswith(("http://", "https://")) and not any("security" in s for s in suites) \
                and not uri.rstrip("/").endswith("-security"):
            return uri.rstrip("/")
    raise E2EUnavailable(f"no Debian archive found in {apt_dir}/sources.list or {apt_dir}/sources.list.d")


# ---------------------------------------------------------------------------------------------- the root
def _dpkg_field(root: Path, package: str, field: str) -> str:
    return harness._run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", f"-f=${{{field}}}", package],
                        what=f"reading {package} in the trixie root").strip()


def ensure_root(work: Path, mirror: str) -> Path:
    """The trixie root for this recipe and mirror: reused when complete, else made again (about 2-4 minutes)."""
    base = work / SUITE
    base.mkdir(parents=True, exist_ok=True)
    key = _key(SUITE, mirror, ROOT_PACKAGES, ROOT_HOOKS)
    root = base / f"root-{key}"
    marker = base / f"root-{key}.complete"
    if marker.exists() and root.is_dir():
        return root
    for old in base.glob("root-*"):  # one root is enough: the key says which
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
    for old in base.glob("build-*"):
        shutil.rmtree(old, ignore_errors=True)
    partial = base / f"root-{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    say(f"making the trixie root with mmdebstrap from {mirror} into {root} (a few minutes)")
    started = time.monotonic()
    argv = ["nice", "mmdebstrap", "--variant=minbase", "--quiet", f"--include={','.join(ROOT_PACKAGES)}"]
    for option, command in ROOT_HOOKS:
        argv.append(f"{option}={command}")
    argv += [SUITE, str(partial), f"deb {mirror} {SUITE} main", f"deb-src {mirror} {SUITE} main"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    harness._run(argv, what="mmdebstrap of the trixie root", env=env, timeout=3600)
    partial.rename(root)
    marker.write_text(key + "\n")
    say(f"trixie root ready in {time.monotonic() - started:.0f} s")
    return root


def kernel_of(root: Path) -> Tuple[str, Path]:
    release = harness.kernel_release_from_depends(_dpkg_field(root, "linux-image-amd64", "Depends"))
    vmlinuz = root / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.exists() or not (root / "lib" / "modules" / release / "build").exists():
        raise E2ESetupError(f"the trixie root lacks the kernel or headers of {release}")
    return release, vmlinuz


# A private mount namespace: /proc, /dev, a fresh /tmp and the build directory are mounted into the root only for
# the chroot's lifetime, and vanish with it even if the build is killed.
_IN_ROOT = (
    'R=$1; B=$2; S=$3; mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"; mount -t tmpfs tmpfs "$R/tmp"; '
    f'mount --bind "$B" "$R{GUEST_BUILD}"; '
    'exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 '
    'nice sh -euc "$S"'
)


def in_root(root: Path, builds: Path, script: str, *, what: str, timeout: float = 1800) -> str:
    return harness._run(["unshare", "--mount", "--propagation", "private", "sh", "-euc", _IN_ROOT, "in-root",
                         str(root), str(builds), script], what=what, timeout=timeout)


# ---------------------------------------------------------------------------------------------- builds
def write_variant_sources(scap_src: Path, dest: Path, variant: Variant) -> None:
    """A copy of the scap sources reporting the variant's version, API and schema, in the module and the probe."""
    shutil.copytree(scap_src, dest)
    for config in (dest / "driver_config.h", dest / "bpf" / "driver_config.h"):
        config.write_text(harness.rename_driver_config(config.read_text(), "scap", variant.driver))
    conf = dest / "dkms.conf"
    conf.write_text(harness.rename_dkms_conf(conf.read_text(), "scap", variant.driver.version))


def _check_artifact(path: Path, kind: str, driver: TestDriver, release: str) -> None:
    from driver_loader.artifacts.elf import inspect_artifact, read_artifact

    info = inspect_artifact(read_artifact(path), filename=str(path))
    shown = info.to_dict()
    got = (info.kind, info.driver_version, shown["api_version"], shown["schema_version"])
    want = (kind, driver.version, driver.api_version, driver.schema_version)
    if got != want:
        raise E2ESetupError(f"{path} reports {got}, expected {want}")
    built_for = info.kernel_version if kind == "ebpf" else (info.vermagic or "").split(" ")[0]
    if built_for != release:
        raise E2ESetupError(f"{path} was built for {built_for!r}, not {release}")


def build_drivers(root: Path, builds: Path, release: str, scap_version: str) -> str:
    """`scap` modules and probes for every variant, built in the root against its 6.12 headers."""
    scap_src = root / "usr" / "src" / f"scap-{scap_version}"
    key = _key(release, harness.tree_digest(scap_src), VARIANTS, DRIVERS_RECIPE)
    name = f"drivers-{key}"
    out = builds / name
    if (out / "complete").exists():
        return name
    for old in builds.glob("drivers-*"):
        shutil.rmtree(old, ignore_errors=True)
    say(f"building scap {scap_version} modules and probes for {release} in the trixie root")
    lines = []
    kdir = f"/lib/modules/{release}/build"
    for variant in VARIANTS:
        src = out / "src" / variant.name
        write_variant_sources(scap_src, src, variant)
        # Built in copies on the chroot's tmpfs: src/ stays pristine, a source tree for DKMS in the guest.
        pristine, inside = f"{GUEST_BUILD}/{name}/src/{variant.name}", f"/tmp/{variant.name}"
        lines.append(f"cp -a {pristine} {inside} && make -s -C {kdir} M={inside} -j2 modules >/dev/null "
                     f"&& cp {inside}/scap.ko {GUEST_BUILD}/{name}/{variant.name}.ko")
        if variant.probe:
            lines.append(f"make -s -C {inside}/bpf KERNELDIR={kdir} >/dev/null 2>&1 || make -C {inside}/bpf "
                         f"KERNELDIR={kdir}; cp {inside}/bpf/probe.o {GUEST_BUILD}/{name}/{variant.name}.o")
        lines.append(f"rm -rf {inside}")
    started = time.monotonic()
    in_root(root, builds, "\n".join(lines), what="building the test drivers in the trixie root")
    for variant in VARIANTS:
        _check_artifact(out / f"{variant.name}.ko", "kmod", variant.driver, release)
        if variant.probe:
            _check_artifact(out / f"{variant.name}.o", "ebpf", variant.driver, release)
    (out / "complete").write_text(key + "\n")
    say(f"test drivers built in {time.monotonic() - started:.0f} s")
    return name


def build_engine(root: Path, builds: Path, libs_version: str) -> str:
    """libscap_engine_bpf from Debian's falcosecurity-libs source with bpf_engine_mmap.patch (about a minute)."""
    key = _key(libs_version, _file_digest(ENGINE_PATCH))
    name = f"engine-{key}"
    out = builds / name
    if (out / "complete").exists():
        return name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copyfile(ENGINE_PATCH, out / ENGINE_PATCH.name)
    upstream = libs_version.split("-")[0].split("+")[0]
    say(f"rebuilding libscap_engine_bpf {upstream} with {ENGINE_PATCH.name}")
    started = time.monotonic()
    work = f"{GUEST_BUILD}/{name}"
    script = f"""
cp -a {DEB_SRC}/{LIBS_SOURCE_PACKAGE}-{upstream} {work}/src
cd {work}/src && patch -s -p1 < {work}/{ENGINE_PATCH.name}
mkdir -p {work}/obj && cd {work}/obj
cmake ../src -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUSE_BUNDLED_DEPS=OFF -DUSE_BUNDLED_VALIJSON=OFF \
  -DVALIJSON_INCLUDE=/usr/include/valijson -DBUILD_SHARED_LIBS=ON -DBUILD_DRIVER=OFF \
  -DFALCOSECURITY_LIBS_VERSION={upstream} -DDRIVER_VERSION={upstream} -DBUILD_LIBSCAP_GVISOR=OFF \
  -DBUILD_LIBSCAP_EXAMPLES=OFF -DBUILD_LIBSINSP_EXAMPLES=OFF -DCREATE_TEST_TARGETS=OFF >/dev/null
make -s -j2 scap_engine_bpf >/dev/null
mkdir -p {work}/lib && cp -a {work}/obj/libscap/engine/bpf/libscap_engine_bpf.so* {work}/lib/
rm -rf {work}/src {work}/obj
"""
    in_root(root, builds, script, what="rebuilding libscap_engine_bpf in the trixie root", timeout=2400)
    if not list((out / "lib").glob("libscap_engine_bpf.so.*")):
        raise E2ESetupError(f"the rebuild left no libscap_engine_bpf.so in {out / 'lib'}")
    (out / "complete").write_text(key + "\n")
    say(f"bpf engine rebuilt in {time.monotonic() - started:.0f} s")
    return name


def build_consumer(root: Path, builds: Path, libs_version: str) -> str:
    key = _key(libs_version, _file_digest(CONSUMER_SOURCE))
    name = f"consumer-{key}"
    out = builds / name
    if (out / "scap_count").exists():
        return name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copyfile(CONSUMER_SOURCE, out / CONSUMER_SOURCE.name)
    upstream = libs_version.split("-")[0].split("+")[0]
    work = f"{GUEST_BUILD}/{name}"
    # pkg-config --cflags libscap is wrong on Debian (prefix=${pcfiledir}/../..), so the include path is given.
    in_root(root, builds, f'cd {work} && gcc -O2 -Wall -Werror -I/usr/include/falcosecurity '
                          f'-DLIBS_VERSION=\'"{upstream}"\' -o scap_count.tmp scap_count.c '
                          f'$(pkg-config --libs libscap) && mv scap_count.tmp scap_count',
            what="building the libscap consumer (scap_count.c)")
    return name


def prepare() -> Stack:
    """Everything before the boot. Raises E2EUnavailable when this machine cannot run the stack."""
    harness.require_host()
    harness.ensure_packages(HOST_PACKAGES + harness.PACKAGES)
    work = harness.work_dir()
    root = ensure_root(work, debian_mirror())
    release, vmlinuz = kernel_of(root)
    scap_version = _dpkg_field(root, "falcosecurity-scap-dkms", "Version").rsplit("-", 1)[0]
    libs_version = _dpkg_field(root, "libfalcosecurity0-dev", "Version")
    if not (root / "usr" / "src" / f"scap-{scap_version}" / "dkms.conf").exists():
        raise E2ESetupError(f"the trixie root has no /usr/src/scap-{scap_version}")
    builds = root.parent / f"build-{root.name[len('root-'):]}"
    builds.mkdir(exist_ok=True)
    return Stack(root, release, vmlinuz, builds, build_drivers(root, builds, release, scap_version),
                 build_engine(root, builds, libs_version), build_consumer(root, builds, libs_version),
                 scap_version, libs_version.split("-")[0])


# ---------------------------------------------------------------------------------------------- the VM
def guest_config(stack: Stack) -> dict:
    build = GUEST_BUILD
    return {
        "checkout": GUEST_CHECKOUT,
        "python": "/usr/bin/python3",
        "kernel_release": stack.kernel_release,
        "pycache_prefix": f"{GUEST_RUN}/pycache",
        "scap_source_version": stack.scap_source_version,
        "libs_version": stack.libs_version,
        "modules": {v.name: f"{build}/{stack.drivers}/{v.name}.ko" for v in VARIANTS},
        "probes": {v.name: f"{build}/{stack.drivers}/{v.name}.o" for v in VARIANTS if v.probe},
        "versions": {v.name: dataclasses.asdict(v.driver) for v in VARIANTS},
        "dkms_sources": f"{build}/{stack.drivers}/src/{DKMS_SOURCES_VARIANT}",
        "dkms_version": next(v.driver.version for v in VARIANTS if v.name == DKMS_SOURCES_VARIANT),
        "consumer": f"{build}/{stack.consumer}/scap_count",
        "patched_engine": f"{build}/{stack.engine}/lib",
    }


def _copy_output(stream, log, lines: List[str]) -> None:
    # Piped, not redirected to the file: QEMU reopens /proc/self/fd/1 with its own offset and would overwrite it.
    for raw in iter(stream.readline, b""):
        text = raw.decode(errors="replace")
        log.write(text)
        log.flush()
        lines.append(text)


def boot(stack: Stack, scenarios: Sequence[str], *,
         timeout: float = float(os.environ.get("E2E_TIMEOUT", "3600"))) -> harness.GuestRun:
    """One VM of the trixie root: boot, run the scenarios in order, power off."""
    work = harness.work_dir()
    vng_bin = harness.ensure_virtme_ng(work)
    run_dir = work / SUITE / "run"
    (run_dir / "pycache").mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "guest-config.json"
    config_path.write_text(json.dumps(guest_config(stack), indent=2))
    command = " ".join(["/usr/bin/python3", f"{GUEST_CHECKOUT}/tests/e2e/{GUEST_SCRIPT_NAME}",
                        f"{GUEST_RUN}/guest-config.json", *scenarios])
    run: Optional[harness.GuestRun] = None
    for accel in harness.choose_accels():
        log_path = work / SUITE / f"guest-{accel}.log"
        argv = [str(vng_bin / "vng"), "--root", str(stack.root), "--run", str(stack.vmlinuz), "--memory", "2G",
                "--cpus", "2", "--cwd", str(stack.root), f"--rodir={GUEST_CHECKOUT}={harness.CHECKOUT}",
                f"--rodir={GUEST_BUILD}={stack.builds}", f"--rwdir={GUEST_RUN}={run_dir}",
                "--overlay-rwdir", "/root", "--exec", command]
        if accel == "tcg":
            argv.insert(1, "--disable-kvm")
        say(f"booting trixie's {stack.kernel_release} with virtme-ng ({accel}); guest log: {log_path}")
        started = time.monotonic()
        env = dict(os.environ, PATH=f"{vng_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        lines: List[str] = []
        with open(log_path, "w") as log:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=work)
            reader = threading.Thread(target=_copy_output, args=(proc.stdout, log, lines), daemon=True)
            reader.start()
            try:
                status = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                status = proc.wait()
                log.write(f"\n[e2e] the VM did not finish within {timeout:.0f} s\n")
            reader.join(timeout=30)
        text = "".join(lines)
        run = harness.GuestRun(harness.parse_results(text), GUEST_DONE in text, status, log_path, accel)
        say(f"VM finished in {time.monotonic() - started:.0f} s with exit status {status}, "
            f"{len(run.results)} scenario result(s)")
        if GUEST_READY in text:
            return run
    assert run is not None
    return run


def demo() -> int:
    """The second half of scripts/e2e-demo: install on trixie's 6.12, then Falco's libscap reads live events."""
    try:
        stack = prepare()
    except E2EUnavailable as exc:
        say(f"cannot run the demo here: {exc}")
        return 2
    run = boot(stack, ["kmod_install_and_read"])
    result = run.results.get("kmod_install_and_read")
    if result is None:
        say(f"the guest printed no result; last lines of {run.log_path}:\n{run.log_tail()}")
        return 1
    print(f"\n=== Debian 13's kernel {stack.kernel_release}, the scap {stack.scap_source_version} driver, and "
          f"Falco's libscap {stack.libs_version} ({run.accel}) ===")
    events = None
    for command in result.commands:
        argv = command["argv"]
        shown = ["falco-driver-loader", *argv[3:]] if argv[1:3] == ["-m", "driver_loader"] else argv
        print(f"\n$ {' '.join(shown)}")
        for stream in ("stderr", "stdout"):
            if command.get(stream, "").strip():
                print(command[stream].rstrip())
        print(f"(exit status {command['exit']})")
        found = re.search(r"^SCAP-EVENTS (\d+)$", command.get("stdout", ""), re.M)
        events = int(found.group(1)) if found else events
    print("\nChecked in the guest afterwards:")
    for check in result.checks:
        print(f"  [{'ok' if check['ok'] else 'FAIL'}] {check['what']}")
    print(f"\nFull guest log: {run.log_path}")
    if not result.ok or events is None:
        print("FAIL")
        return 1
    print(f"PASS: the loader installed scap 8.0.0+driver on {stack.kernel_release}, and libscap read {events} live "
          f"events")
    return 0


if __name__ == "__main__":
    sys.exit(demo())
