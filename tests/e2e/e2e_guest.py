"""Runs inside the e2e guest: Debian's kernel under QEMU, the host's / read-only with writable overlays.

Usage: e2e_guest.py <config.json> <scenario>...

Prints E2E-GUEST-READY, then one `E2E-RESULT <json>` line per scenario, then E2E-GUEST-DONE. Each scenario
first puts the guest into the state it needs with plain tools (rmmod, insmod, dkms), so one failure does not
cascade into the next. The mirror is served on the guest's own 127.0.0.1; the VM has no network device.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote

RESULT_PREFIX = "E2E-RESULT "
GUEST_READY = "E2E-GUEST-READY"
GUEST_DONE = "E2E-GUEST-DONE"

CACHE_DIR = Path("/root/.falco")
FALCO_CONFIG_DIR = Path("/etc/falco")
CONFIG_D = FALCO_CONFIG_DIR / "config.d"
MIRROR_ROOT = Path("/tmp/e2e-mirror")
OUTPUT_LIMIT = 6000
# Kernel log lines that show finit_module(2) was called on a module, successfully or not.
KERNEL_LOADER_LINES = re.compile(
    r"falco:|scap:|version magic|disagrees about version|Invalid ELF|module verification|section header"
)
HOLD_DEVICE = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
print("held", flush=True)
time.sleep(3600)
"""


class Command:
    def __init__(self, argv: Sequence[str], exit: int, stdout: str, stderr: str, seconds: float):
        self.argv, self.exit, self.stdout, self.stderr, self.seconds = list(argv), exit, stdout, stderr, seconds

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def to_json(self) -> dict:
        return {"argv": self.argv, "exit": self.exit, "seconds": round(self.seconds, 1),
                "stdout": self.stdout[-OUTPUT_LIMIT:], "stderr": self.stderr[-OUTPUT_LIMIT:]}


class Recorder:
    """What one scenario ran and checked."""

    def __init__(self, name: str):
        self.name = name
        self.checks: List[dict] = []
        self.commands: List[Command] = []

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        self.checks.append({"what": what, "ok": bool(ok), "detail": detail})
        return bool(ok)

    def run(self, argv: Sequence[str], *, timeout: float = 300, env: Optional[dict] = None,
            setup: bool = False) -> Command:
        """Run and record a command; setup commands are recorded only when they fail."""
        started = time.monotonic()
        try:
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env)
            command = Command(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
        except subprocess.TimeoutExpired as exc:
            command = Command(argv, -1, _text(exc.stdout), _text(exc.stderr) + f"\n[timed out after {timeout} s]",
                              time.monotonic() - started)
        except OSError as exc:
            command = Command(argv, -1, "", str(exc), time.monotonic() - started)
        if not setup or command.exit != 0:
            self.commands.append(command)
        return command

    def result(self) -> dict:
        ok = bool(self.checks) and all(c["ok"] for c in self.checks)
        return {"scenario": self.name, "ok": ok, "checks": self.checks,
                "commands": [c.to_json() for c in self.commands]}


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Mirror:
    """A driver mirror under MIRROR_ROOT, one repository per directory, served on 127.0.0.1."""

    def __init__(self):
        self.requests: List[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(MIRROR_ROOT), **kwargs)

            def log_request(self, code="-", size="-"):
                requests.append(f"{self.command} {self.path} {code}")

            def log_message(self, format, *args):
                pass

        MIRROR_ROOT.mkdir(parents=True, exist_ok=True)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def repo(self, name: str) -> str:
        (MIRROR_ROOT / name).mkdir(parents=True, exist_ok=True)
        return f"{self.base}/{name}"

    def publish(self, repo: str, relative_path: str, data: bytes, *, sidecar: Optional[str] = None) -> None:
        """Put an artifact and its `.sha256` sidecar (sha256sum format) at `relative_path` under `repo`."""
        path = MIRROR_ROOT / repo / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digest = sidecar or hashlib.sha256(data).hexdigest()
        Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n")

    def mark(self) -> int:
        return len(self.requests)

    def since(self, mark: int) -> List[str]:
        return self.requests[mark:]


class Guest:
    def __init__(self, config: dict, mirror: Mirror):
        self.config = config
        self.mirror = mirror
        self.release: str = config["kernel_release"]
        self.python: str = config["python"]
        # Bytecode goes to a directory shared with the host (the checkout is read-only here), so only the first
        # run pays for compiling under TCG; the host's environment may have turned bytecode writing off.
        self.cli_env = dict(os.environ, PYTHONPATH=config["checkout"], HOME="/root",
                            PYTHONPYCACHEPREFIX=config["pycache_prefix"],
                            PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        self.cli_env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.artifacts: Dict[str, dict] = {}

    # ------------------------------------------------------------------ observations
    @staticmethod
    def loaded_version(module: str = "falco") -> Optional[str]:
        path = Path(f"/sys/module/{module}/version")
        return path.read_text().strip() if path.exists() else None

    @staticmethod
    def is_loaded(module: str = "falco") -> bool:
        return Path(f"/sys/module/{module}").exists()

    @staticmethod
    def dmesg() -> List[str]:
        return subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()

    @staticmethod
    def cached_files() -> List[str]:
        if not CACHE_DIR.exists():
            return []
        return sorted(str(p) for p in CACHE_DIR.rglob("*") if p.is_file())

    def installed_module_path(self) -> Optional[str]:
        """Where modprobe would find a falco module for this kernel, if anywhere."""
        found = subprocess.run(["modinfo", "-k", self.release, "-n", "falco"], capture_output=True, text=True)
        return found.stdout.strip() if found.returncode == 0 else None

    def dkms_status(self) -> str:
        return subprocess.run(["dkms", "status", "-m", "falco"], capture_output=True, text=True).stdout.strip()

    # Above the loader's own limits (--tool-timeout 600 s for depmod, --build-timeout 900 s): under TCG on a loaded
    # machine depmod over 9p alone can take minutes, and the loader, not this harness, should say what timed out.
    def cli(self, rec: Recorder, *args: str, timeout: float = 1200) -> Command:
        return rec.run([self.python, "-m", "driver_loader", *args], env=self.cli_env, timeout=timeout)

    # ------------------------------------------------------------------ state
    def insmod(self, rec: Recorder, path: str) -> bool:
        command = rec.run(["insmod", path], setup=True)
        return rec.check(f"setup: insmod {Path(path).name}", command.exit == 0, command.stderr.strip())

    def fresh_state(self, rec: Recorder) -> None:
        """No driver loaded, registered in DKMS or installed in the module tree; empty cache and config.d."""
        for module in ("falco", "scap"):
            if self.is_loaded(module):
                rec.run(["rmmod", module], setup=True)
                rec.check(f"setup: {module} unloaded", not self.is_loaded(module))
        if self.dkms_status():
            rec.run(["dkms", "remove", "-m", "falco", "--all"], setup=True, timeout=600)
            rec.check("setup: falco removed from DKMS", not self.dkms_status(), self.dkms_status())
        installed = self.installed_module_path()
        if installed:
            Path(installed).unlink()
            rec.run(["depmod", self.release], setup=True)
        shutil.rmtree(CACHE_DIR, ignore_errors=True)
        shutil.rmtree(CONFIG_D, ignore_errors=True)

    def ensure_loaded(self, rec: Recorder, version: str) -> bool:
        if self.loaded_version() == version:
            return True
        self.fresh_state(rec)
        return self.insmod(rec, self.config["modules"][version])

    # ------------------------------------------------------------------ mirror
    def artifact(self, rec: Recorder, version: str) -> Optional[dict]:
        """Where OUR CLI looks for `version` on this kernel: its printenv output, taken as is."""
        if version not in self.artifacts:
            command = self.cli(rec, "printenv", "--output", "json", "--type", "kmod", "--driver-version", version)
            if command.exit != 0:
                rec.check(f"printenv for {version} (names the mirror's files)", False, command.stderr.strip()[-500:])
                return None
            self.artifacts[version] = artifact_from_printenv(json.loads(command.stdout))
        return self.artifacts[version]

    def mirror_with(self, rec: Recorder, repo: str, entries: Dict[str, bytes],
                    sidecars: Optional[Dict[str, str]] = None) -> Optional[str]:
        """A repository holding `entries` (driver version -> module bytes); returns its URL."""
        url = self.mirror.repo(repo)
        for version, data in entries.items():
            artifact = self.artifact(rec, version)
            if artifact is None:
                return None
            self.mirror.publish(repo, artifact["path"], data, sidecar=(sidecars or {}).get(version))
        return url

    def module_bytes(self, version: str) -> bytes:
        return Path(self.config["modules"][version]).read_bytes()


def artifact_from_printenv(doc: dict) -> dict:
    """The first candidate as our printenv reports it: its file name, its cache path, and where it sits below a
    repository on disk (the URL path with its %-escapes decoded, as a web server maps it)."""
    if not doc.get("candidates"):
        raise KeyError(f"printenv reported no candidate artifact: {doc}")
    candidate, repo = doc["candidates"][0], doc["repos"][0].rstrip("/")
    url = candidate["urls"][0]
    if not url.startswith(repo + "/"):
        raise ValueError(f"candidate URL {url} is not below repository {repo}")
    return {"filename": candidate["filename"], "path": unquote(url[len(repo) + 1:]),
            "cache_path": candidate["cache_path"]}


# ---------------------------------------------------------------------- scenarios
def expect_exit(rec: Recorder, command: Command, code: int) -> bool:
    return rec.check(f"exit status {code}", command.exit == code, f"got {command.exit}")


def expect_version(rec: Recorder, guest: Guest, version: Optional[str], what: str = "") -> bool:
    got = guest.loaded_version()
    label = what or (f"/sys/module/falco/version is {version}" if version else "no falco module loaded")
    return rec.check(label, got == version, f"got {got}")


def cached_artifacts(filename: str = "") -> List[str]:
    """Cache files of an artifact (or of any): the file itself, its metadata and temp files. The per-artifact
    lock files stay by design (removing a lock file another loader may hold is racy)."""
    from driver_loader.artifacts.cache import LOCK_SUFFIX

    return [f for f in Guest.cached_files() if filename in Path(f).name and not f.endswith(LOCK_SUFFIX)]


def expect_nothing_cached(rec: Recorder, filename: str) -> bool:
    kept = cached_artifacts(filename)
    return rec.check("nothing kept in the cache", not kept, ", ".join(kept))


def scenario_smoke_kmod(guest: Guest, rec: Recorder) -> None:
    """The infrastructure itself: our built module loads, reports its version, and an open device holds it."""
    guest.fresh_state(rec)
    module = guest.config["modules"]["8.0.0+driver"]
    command = rec.run(["insmod", module])
    rec.check("insmod of the built 8.0.0+driver module", command.exit == 0, command.stderr.strip())
    expect_version(rec, guest, "8.0.0+driver")
    rec.check("/dev/falco0 exists", Path("/dev/falco0").exists())
    holder = subprocess.Popen([guest.python, "-c", HOLD_DEVICE, "/dev/falco0"], stdout=subprocess.PIPE, text=True)
    try:
        rec.check("a process holds /dev/falco0 open", holder.stdout.readline().strip() == "held")
        refcnt = Path("/sys/module/falco/refcnt").read_text().strip()
        rec.check("the open device holds a module reference", refcnt != "0", f"refcnt {refcnt}")
        busy = rec.run(["rmmod", "falco"])
        rec.check("rmmod fails while the device is open", busy.exit != 0 and guest.is_loaded(), busy.stderr.strip())
    finally:
        holder.kill()
        holder.wait()
    done = rec.run(["rmmod", "falco"])
    rec.check("rmmod succeeds once the device is closed", done.exit == 0 and not guest.is_loaded(), done.stderr)


def scenario_smoke_loopback_http(guest: Guest, rec: Recorder) -> None:
    import urllib.request

    (MIRROR_ROOT / "hello.txt").write_text("hello from the guest\n")
    body = urllib.request.urlopen(f"{guest.mirror.base}/hello.txt", timeout=30).read().decode()
    rec.check(f"GET {guest.mirror.base}/hello.txt over the guest's loopback", body == "hello from the guest\n", body)


def scenario_smoke_cli(guest: Guest, rec: Recorder) -> None:
    command = guest.cli(rec, "--help")
    expect_exit(rec, command, 0)
    rec.check("the help lists the install command", re.search(r"^\s+install\s", command.stdout, re.M) is not None)


def _install_good(guest: Guest, rec: Recorder, version: str, *extra: str) -> Optional[Command]:
    repo = guest.mirror_with(rec, "good", {v: guest.module_bytes(v) for v in ("8.0.0+driver", "8.1.0+driver")})
    if repo is None:
        return None
    args = ["install", "--type", "kmod", "--repo", repo]
    if version:
        args += ["--driver-version", version]
    return guest.cli(rec, *args, *extra)


def scenario_download_verify_load(guest: Guest, rec: Recorder) -> None:
    """Scenario 1: the main job. Download from the mirror, verify against the sidecar, load."""
    guest.fresh_state(rec)
    mark = guest.mirror.mark()
    command = _install_good(guest, rec, "8.0.0+driver")
    if command is None:
        return
    artifact = guest.artifacts["8.0.0+driver"]
    expect_exit(rec, command, 0)
    expect_version(rec, guest, "8.0.0+driver")
    fetched = guest.mirror.since(mark)
    rec.check("the module was downloaded from the mirror",
              any(r.startswith("GET ") and r.split()[1].endswith(artifact["filename"]) and r.endswith(" 200")
                  for r in fetched), "; ".join(fetched))
    rec.check("its .sha256 sidecar was fetched", any(".sha256 " in r for r in fetched), "; ".join(fetched))
    cached = Path(artifact["cache_path"])
    rec.check("the verified module is kept in the cache",
              cached.exists() and sha256_file(cached) == sha256_file(Path(guest.config["modules"]["8.0.0+driver"])),
              str(cached))


def scenario_rerun_is_noop(guest: Guest, rec: Recorder) -> None:
    """Scenario 2: the right driver is already loaded, so nothing is downloaded and nothing changes."""
    if not guest.ensure_loaded(rec, "8.0.0+driver"):
        return
    loads_before = sum("driver loading" in line for line in guest.dmesg())
    mark = guest.mirror.mark()
    command = _install_good(guest, rec, "8.0.0+driver")
    if command is None:
        return
    expect_exit(rec, command, 0)
    rec.check("the log says 'already loaded'", "already loaded" in command.output.lower())
    downloads = [r for r in guest.mirror.since(mark) if ".ko" in r]
    rec.check("nothing was downloaded", not downloads, "; ".join(downloads))
    expect_version(rec, guest, "8.0.0+driver")
    loads_after = sum("driver loading" in line for line in guest.dmesg())
    rec.check("the module was not reloaded", loads_after == loads_before,
              f"'driver loading' kernel lines {loads_before} -> {loads_after}")


def scenario_upgrade(guest: Guest, rec: Recorder) -> None:
    """Scenario 3: 8.0.0 loaded; the default version (8.1.0, from /usr/src) replaces it."""
    if not guest.ensure_loaded(rec, "8.0.0+driver"):
        return
    command = _install_good(guest, rec, "")
    if command is None:
        return
    expect_exit(rec, command, 0)
    expect_version(rec, guest, "8.1.0+driver", "8.0.0+driver was unloaded and 8.1.0+driver loaded")


def scenario_bad_checksum(guest: Guest, rec: Recorder) -> None:
    """Scenario 4: the sidecar does not match the module."""
    guest.fresh_state(rec)
    wrong = hashlib.sha256(b"not the module").hexdigest()
    repo = guest.mirror_with(rec, "bad-checksum", {"8.0.0+driver": guest.module_bytes("8.0.0+driver")},
                             sidecars={"8.0.0+driver": wrong})
    if repo is None:
        return
    command = guest.cli(rec, "install", "--type", "kmod", "--repo", repo, "--driver-version", "8.0.0+driver",
                        "--no-compile")
    expect_exit(rec, command, 4)
    expect_version(rec, guest, None)
    expect_nothing_cached(rec, guest.artifacts["8.0.0+driver"]["filename"])


def _refused_module(guest: Guest, rec: Recorder, repo_name: str, data: bytes) -> None:
    """Scenario 5: a module with a valid sidecar that must still be refused, before finit_module."""
    guest.fresh_state(rec)
    repo = guest.mirror_with(rec, repo_name, {"8.0.0+driver": data})
    if repo is None:
        return
    kernel_lines_before = len(guest.dmesg())
    command = guest.cli(rec, "install", "--type", "kmod", "--repo", repo, "--driver-version", "8.0.0+driver",
                        "--no-compile")
    expect_exit(rec, command, 4)
    rec.check("nothing loaded", not guest.is_loaded("falco") and not guest.is_loaded("scap"))
    kernel_lines = [line for line in guest.dmesg()[kernel_lines_before:] if KERNEL_LOADER_LINES.search(line)]
    rec.check("refused before finit_module (the kernel logged nothing about it)", not kernel_lines,
              " | ".join(kernel_lines))
    rec.check("our own message, not the kernel's 'Invalid module format'",
              command.exit != 0 and "invalid module format" not in command.output.lower())
    expect_nothing_cached(rec, guest.artifacts["8.0.0+driver"]["filename"])


def _variant(guest: Guest, name: str) -> bytes:
    return Path(guest.config["variants"][name]).read_bytes()


def scenario_wrong_vermagic_flags(guest: Guest, rec: Recorder) -> None:
    _refused_module(guest, rec, "wrong-vermagic-flags", _variant(guest, "vermagic-flags"))


def scenario_built_for_other_kernel(guest: Guest, rec: Recorder) -> None:
    _refused_module(guest, rec, "other-kernel-abi", _variant(guest, "other-release-abi"))


def scenario_truncated_module(guest: Guest, rec: Recorder) -> None:
    _refused_module(guest, rec, "truncated", _variant(guest, "truncated"))


def scenario_wrong_module_name(guest: Guest, rec: Recorder) -> None:
    _refused_module(guest, rec, "wrong-name", Path(guest.config["scap_module"]).read_bytes())


def scenario_other_release_matching_crcs(guest: Guest, rec: Recorder) -> None:
    """The kernel's own rule: with modversions, a module whose vermagic names another release loads when every
    symbol CRC matches, so the loader must not refuse it either."""
    guest.fresh_state(rec)
    repo = guest.mirror_with(rec, "other-release", {"8.0.0+driver": _variant(guest, "other-release")})
    if repo is None:
        return
    command = guest.cli(rec, "install", "--type", "kmod", "--repo", repo, "--driver-version", "8.0.0+driver",
                        "--no-compile")
    expect_exit(rec, command, 0)
    expect_version(rec, guest, "8.0.0+driver")


def scenario_out_of_range(guest: Guest, rec: Recorder) -> None:
    """Scenario 6: only 9.0.0+driver on the mirror; the default 8.1.0 accepts >=8.1.0,<9.0.0."""
    guest.fresh_state(rec)
    repo = guest.mirror_with(rec, "out-of-range", {"9.0.0+driver": guest.module_bytes("9.0.0+driver")})
    if repo is None:
        return
    mark = guest.mirror.mark()
    command = guest.cli(rec, "install", "--type", "kmod", "--repo", repo, "--no-compile")
    expect_exit(rec, command, 3)
    expect_version(rec, guest, None)
    downloads = [r for r in guest.mirror.since(mark) if r.startswith("GET ") and ".ko" in r and " 200" in r]
    rec.check("the 9.0.0+driver module was not downloaded", not downloads, "; ".join(downloads))


def scenario_in_use(guest: Guest, rec: Recorder) -> None:
    """Scenario 7: an open /dev/falco0 pins 8.0.0; the upgrade must fail and leave it loaded."""
    if not guest.ensure_loaded(rec, "8.0.0+driver"):
        return
    holder = subprocess.Popen([guest.python, "-c", HOLD_DEVICE, "/dev/falco0"], stdout=subprocess.PIPE, text=True)
    try:
        if not rec.check("setup: a process holds /dev/falco0 open", holder.stdout.readline().strip() == "held"):
            return
        command = _install_good(guest, rec, "8.1.0+driver", "--unload-retries", "2", "--no-compile")
        if command is None:
            return
        rec.check("the install fails", command.exit != 0, f"exit {command.exit}")
        rec.check("the message names the holder or the reference count",
                  f"pid {holder.pid}" in command.output
                  or re.search(r"refcnt \d|refcount|reference count", command.output, re.IGNORECASE) is not None)
        expect_version(rec, guest, "8.0.0+driver", "the loaded 8.0.0+driver module is untouched")
        rec.check("the holder is still running", holder.poll() is None)
    finally:
        holder.kill()
        holder.wait()


def scenario_build_fallback(guest: Guest, rec: Recorder) -> None:
    """Scenario 8: nothing on the mirror; DKMS builds /usr/src/falco-8.1.0+driver inside the guest."""
    guest.fresh_state(rec)
    repo = guest.mirror.repo("empty")
    command = guest.cli(rec, "install", "--type", "kmod", "--repo", repo, "--compile", timeout=1200)
    expect_exit(rec, command, 0)
    expect_version(rec, guest, "8.1.0+driver")
    status = guest.dkms_status()
    rec.check("DKMS built falco 8.1.0+driver", "8.1.0+driver" in status, status)


def scenario_cleanup(guest: Guest, rec: Recorder) -> None:
    """Scenario 9: module, DKMS registration, cache entries and config.d all go."""
    if not guest.is_loaded() and not guest.insmod(rec, guest.config["modules"]["8.1.0+driver"]):
        return
    if not guest.dkms_status():
        added = rec.run(["dkms", "add", "-m", "falco", "-v", "8.1.0+driver"], setup=True)
        if not rec.check("setup: falco 8.1.0+driver registered in DKMS", added.exit == 0, added.stderr):
            return
    if not cached_artifacts():
        repo = guest.mirror_with(rec, "good", {"8.1.0+driver": guest.module_bytes("8.1.0+driver")})
        if repo is None:
            return
        fetched = guest.cli(rec, "download", "--type", "kmod", "--repo", repo, "--driver-version", "8.1.0+driver")
        if not rec.check("setup: the download command filled the cache", bool(cached_artifacts()),
                         f"exit {fetched.exit}"):
            return
    config_file = CONFIG_D / "engine-kind-falcoctl.yaml"
    if not config_file.exists():
        CONFIG_D.mkdir(parents=True, exist_ok=True)
        config_file.write_text("engine:\n    kind: kmod\n")
    before = cached_artifacts()
    command = guest.cli(rec, "cleanup", "--type", "kmod", "--cache", timeout=600)
    expect_exit(rec, command, 0)
    expect_version(rec, guest, None, "the module is unloaded")
    status = guest.dkms_status()
    rec.check("DKMS no longer knows falco", not status, status)
    left = cached_artifacts()
    rec.check("the cache entries are removed", not left, f"before: {before}; left: {left}")
    rec.check(f"{config_file} is removed", not config_file.exists())


def scenario_persist(guest: Guest, rec: Recorder) -> None:
    """Scenario 10: after install --persist, a plain `modprobe falco` loads the same driver."""
    guest.fresh_state(rec)
    leftover = guest.installed_module_path()
    if not rec.check("setup: modprobe cannot find falco yet", leftover is None, str(leftover)):
        return
    command = _install_good(guest, rec, "8.1.0+driver", "--persist")
    if command is None:
        return
    expect_exit(rec, command, 0)
    expect_version(rec, guest, "8.1.0+driver")
    unload = rec.run(["rmmod", "falco"])
    rec.check("rmmod falco", unload.exit == 0, unload.stderr.strip())
    load = rec.run(["modprobe", "falco"])
    rec.check("modprobe falco works afterwards", load.exit == 0, load.stderr.strip())
    expect_version(rec, guest, "8.1.0+driver", "modprobe loaded the persisted 8.1.0+driver")


def scenario_image_kmod(guest: Guest, rec: Recorder) -> None:
    """The container image as the Helm chart's init container: chroot into the built image's root with the chart's
    mounts of this guest's /proc, /boot, /lib/modules, /usr and /etc under /host (tests/image_harness.py), run its
    entrypoint with `kmod` and the chart's environment; the verified module is loaded in this kernel."""
    image = guest.config.get("image") or {}
    if not rec.check("the image's root was exported by the host", bool(image.get("root")), image.get("error", "")):
        return
    sys.path.insert(0, str(Path(guest.config["checkout"]) / "tests"))
    import image_harness

    guest.fresh_state(rec)
    version = guest.config["installed_sources_version"]  # the default: the node's /usr/src, through the links
    repo = guest.mirror_with(rec, "image", {version: guest.module_bytes(version)})
    if repo is None:
        return
    volumes = Path("/tmp/e2e-image")
    shutil.rmtree(volumes, ignore_errors=True)
    cache, config_d = volumes / "root-falco", volumes / "config.d"
    for path in (cache, config_d):
        path.mkdir(parents=True)
    mounts = image_harness.chart_mounts(Path("/"), cache, config_d)
    env = dict(item.split("=", 1) for item in image["env"])
    env.update(FALCOCTL_DRIVER_REPOS=repo, FALCOCTL_DRIVER_CONFIG_UPDATE_FALCO="false")  # the chart, kind kmod
    command = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), *image["entrypoint"], "kmod"]
    mark = guest.mirror.mark()
    kernel_lines_before = len(guest.dmesg())
    run = rec.run(image_harness.chroot_argv(Path(image["root"]), mounts, command), timeout=600)
    expect_exit(rec, run, 0)
    rec.check("the image verified the module (sidecar checksum, pre-load checks) before loading it",
              "verified_by=sha256-sidecar" in run.stderr
              and -1 < run.stderr.find("passed the pre-load checks") < run.stderr.find("module loaded"))
    expect_version(rec, guest, version, f"/sys/module/falco/version is {version}, loaded from the image")
    fetched = guest.mirror.since(mark)
    artifact = guest.artifacts[version]
    rec.check("the image downloaded the module and its .sha256 sidecar from the mirror",
              any(r.split()[1].endswith(artifact["filename"]) and r.endswith(" 200") for r in fetched)
              and any(".sha256 " in r and r.endswith(" 200") for r in fetched), "; ".join(fetched))
    cached = [p for p in cache.rglob(artifact["filename"]) if p.is_file()]
    rec.check("the verified module is in the chart's /root/.falco volume",
              len(cached) == 1 and sha256_file(cached[0]) == sha256_file(Path(guest.config["modules"][version])),
              ", ".join(map(str, cached)))
    links = {p.name: os.readlink(p) for p in (Path(image["root"]) / "usr" / "src").glob("falco-*") if p.is_symlink()}
    rec.check("the image linked the node's driver sources into its /usr/src",
              links.get(f"falco-{version}") == f"/host/usr/src/falco-{version}", str(links))
    # An unsigned module only taints the kernel ("module verification failed: ... tainting kernel"); a refusal
    # names the mismatch or the rejected signature.
    refused = [line for line in guest.dmesg()[kernel_lines_before:] if KERNEL_LOADER_LINES.search(line)
               and re.search(r"version magic|disagrees|Invalid ELF|overflow|rejected", line)]
    rec.check("the kernel refused nothing", not refused, " | ".join(refused))
    rec.check("nothing written to config.d for a fixed kind", not list(config_d.iterdir()))


REGISTRY_CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}/storage
http:
  addr: 127.0.0.1:{port}
"""


def _start_registry(rec: Recorder, root: Path) -> Optional[Tuple[subprocess.Popen, str]]:
    """Debian's docker-registry (the CNCF distribution registry) on the guest's loopback, as a fleet's would be."""
    import socket
    import urllib.request

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (root / "config.yml").write_text(REGISTRY_CONFIG.format(root=root, port=port))
    with open(root / "registry.log", "wb") as log:  # the registry keeps its own descriptor
        process = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                                   stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5).read()
            return process, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.5)
    process.kill()
    rec.check("setup: docker-registry answers on the guest's loopback", False,
              (root / "registry.log").read_text(errors="replace")[-800:])
    return None


def _key_pair(rec: Recorder, directory: Path, name: str) -> Path:
    key = directory / f"{name}.key"
    for argv in (["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key)],
                 ["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(directory / f"{name}.pub")]):
        rec.run(argv, setup=True)
    return key


def scenario_registry_signed(guest: Guest, rec: Recorder) -> None:
    """Build once, publish signed, every node pulls and verifies: a builder puts the verified module in its own cache
    and publishes it, signed, to a registry on the guest's loopback; `install --repo oci://... --verify-key` pulls,
    verifies and loads it. A node trusting another key refuses the same artifact before the kernel sees it."""
    guest.fresh_state(rec)
    work = Path("/tmp/e2e-registry")
    started = _start_registry(rec, work / "registry")
    if started is None:
        return
    registry, address = started
    try:
        mirror = guest.mirror_with(rec, "good", {"8.0.0+driver": guest.module_bytes("8.0.0+driver")})
        if mirror is None:
            return
        builder_key = _key_pair(rec, work, "builder")
        other_key = _key_pair(rec, work, "other")
        builder_cache = work / "builder-cache"
        repo = f"oci://{address}/falco/drivers"
        fetched = guest.cli(rec, "download", "--type", "kmod", "--driver-version", "8.0.0+driver", "--repo", mirror,
                            "--cache-dir", str(builder_cache))
        rec.check("the builder has the verified module in its cache", fetched.exit == 0, fetched.stderr[-800:])
        published = guest.cli(rec, "publish", "--type", "kmod", "--driver-version", "8.0.0+driver",
                              "--cache-dir", str(builder_cache), "--repo", repo, "--sign-key", str(builder_key))
        expect_exit(rec, published, 0)
        again = guest.cli(rec, "publish", "--type", "kmod", "--driver-version", "8.0.0+driver",
                          "--cache-dir", str(builder_cache), "--repo", repo, "--sign-key", str(builder_key))
        rec.check("publishing again changes nothing", again.exit == 0 and "unchanged" in again.output,
                  again.output[-800:])
        refused = guest.cli(rec, "install", "--type", "kmod", "--driver-version", "8.0.0+driver", "--repo", repo,
                            "--no-compile", "--verify-key", str(other_key.with_suffix(".pub")))
        expect_exit(rec, refused, 4)
        rec.check("another key's node refuses it, naming the key", "is not valid for key" in refused.stderr,
                  refused.stderr[-800:])
        expect_version(rec, guest, None, "nothing loaded after the refusal")
        installed = guest.cli(rec, "install", "--type", "kmod", "--driver-version", "8.0.0+driver", "--repo", repo,
                              "--no-compile", "--verify-key", str(builder_key.with_suffix(".pub")))
        expect_exit(rec, installed, 0)
        expect_version(rec, guest, "8.0.0+driver")
        rec.check("the signature was verified before the load", "signature verified" in installed.stderr,
                  installed.stderr[-800:])
        cached = [Path(p) for p in guest.cached_files() if p.endswith(".ko")]
        rec.check("the pulled module is the builder's, byte for byte",
                  len(cached) == 1 and sha256_file(cached[0]) == sha256_file(Path(guest.config["modules"]
                                                                                  ["8.0.0+driver"])),
                  ", ".join(map(str, cached)))
    finally:
        registry.kill()
        registry.wait()


SCENARIOS: Dict[str, Callable[[Guest, Recorder], None]] = {
    "smoke_kmod": scenario_smoke_kmod,
    "smoke_loopback_http": scenario_smoke_loopback_http,
    "smoke_cli": scenario_smoke_cli,
    "download_verify_load": scenario_download_verify_load,
    "rerun_is_noop": scenario_rerun_is_noop,
    "upgrade": scenario_upgrade,
    "bad_checksum": scenario_bad_checksum,
    "wrong_vermagic_flags": scenario_wrong_vermagic_flags,
    "built_for_other_kernel": scenario_built_for_other_kernel,
    "truncated_module": scenario_truncated_module,
    "wrong_module_name": scenario_wrong_module_name,
    "other_release_matching_crcs": scenario_other_release_matching_crcs,
    "out_of_range": scenario_out_of_range,
    "in_use": scenario_in_use,
    "build_fallback": scenario_build_fallback,
    "cleanup": scenario_cleanup,
    "persist": scenario_persist,
    "registry_signed": scenario_registry_signed,
    "image_kmod": scenario_image_kmod,
}


def prepare_guest(config: dict) -> Guest:
    """Kernel messages off the console (they would split result lines); the guest's overlays then look like a
    node with Falco installed: its falco.yaml and driver sources, and no loader state the host happens to have."""
    subprocess.run(["dmesg", "-n", "1"], check=False)
    for leftover in [*Path("/usr/src").glob("falco-*"), Path("/etc/falcoctl"), FALCO_CONFIG_DIR]:
        shutil.rmtree(leftover, ignore_errors=True)
    FALCO_CONFIG_DIR.mkdir(parents=True)
    (FALCO_CONFIG_DIR / "falco.yaml").write_text("engine:\n  kind: kmod\n")
    version = config["installed_sources_version"]
    shutil.copytree(config["sources"][version], f"/usr/src/falco-{version}")
    sys.path.insert(0, config["checkout"])
    return Guest(config, Mirror())


def main(argv: Sequence[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    guest = prepare_guest(config)
    print(f"{GUEST_READY} kernel={os.uname().release} mirror={guest.mirror.base}", flush=True)
    return run_scenarios(guest, SCENARIOS, argv[1:])


def run_scenarios(guest, scenarios: dict, names: Sequence[str]) -> int:
    """Run the named scenarios in order, printing one result line each and the done line; 1 if any failed."""
    failed = 0
    for name in names:
        rec = Recorder(name)
        started = time.monotonic()
        try:
            scenarios[name](guest, rec)
        except Exception:
            rec.check("the scenario ran to the end", False, traceback.format_exc()[-2000:])
        result = rec.result()
        failed += not result["ok"]
        print(f"E2E: {name}: {'PASS' if result['ok'] else 'FAIL'} ({time.monotonic() - started:.0f} s)", flush=True)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
    print(f"{GUEST_DONE} failed={failed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
