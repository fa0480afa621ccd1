"""Runs inside the trixie e2e guest: Debian 13's 6.12 kernel, the root made by e2e_trixie.py (read-only, with
tmpfs overlays), the checkout at /e2e/checkout and the builds at /e2e/build.

Usage: e2e_guest_trixie.py <config.json> <scenario>...

Same protocol and helpers as e2e_guest.py (E2E-GUEST-READY, one E2E-RESULT line per scenario, E2E-GUEST-DONE).
The driver here is `scap`, as Debian builds it, so Debian's libscap finds /dev/scap*. Every scenario runs our CLI
against a mirror on the guest's 127.0.0.1, then has scap_count (tests/e2e/scap_count.c, built against libscap)
open what was loaded or handed over and read live events from it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from e2e_guest import (
    CACHE_DIR,
    CONFIG_D,
    FALCO_CONFIG_DIR,
    GUEST_READY,
    Command,
    Guest,
    Mirror,
    Recorder,
    artifact_from_printenv,
    expect_exit,
    run_scenarios,
    sha256_file,
)

NAME = "scap"
FAKE_FALCO_DIR = Path("/run/e2e-falco-bin")
# libscap 0.20's minimums (scap.h), as `falco --version` reports them for the libs it was built with.
REQUIRED_API = "8.0.0"
REQUIRED_SCHEMA = "3.5.0"
CONSUMER_SECONDS = "4"


class TrixieGuest(Guest):
    """Guest helpers for the `scap` driver; the CLI runs exactly as in the 6.1 guest (python3 -m driver_loader)."""

    def __init__(self, config: dict, mirror: Mirror):
        super().__init__(config, mirror)
        self.probe_artifacts: Dict[str, dict] = {}

    def version(self) -> Optional[str]:
        return self.loaded_version(NAME)

    def fresh(self, rec: Recorder) -> None:
        """No driver loaded or registered in DKMS, no Falco on PATH, empty cache and config.d."""
        for module in (NAME, "falco"):
            if self.is_loaded(module):
                rec.run(["rmmod", module], setup=True)
                rec.check(f"setup: {module} unloaded", not self.is_loaded(module))
        status = subprocess.run(["dkms", "status", "-m", NAME], capture_output=True, text=True).stdout
        for version in sorted(set(re.findall(rf"^{NAME}/([^,\s]+),", status, re.M))):
            removed = rec.run(["dkms", "remove", f"{NAME}/{version}", "--all"], setup=True, timeout=900)
            rec.check(f"setup: {NAME} {version} removed from DKMS", removed.exit == 0, removed.stderr.strip())
        shutil.rmtree(CACHE_DIR, ignore_errors=True)
        shutil.rmtree(CONFIG_D, ignore_errors=True)
        shutil.rmtree(FAKE_FALCO_DIR, ignore_errors=True)
        self.cli_env["PATH"] = self.cli_env["PATH"].replace(f"{FAKE_FALCO_DIR}:", "")

    def with_falco(self) -> None:
        """A `falco` on PATH that answers `--version -o json_output=true` as Falco built on this libscap would:
        scap_count prints libscap's compiled-in minimum API and schema versions."""
        FAKE_FALCO_DIR.mkdir(parents=True, exist_ok=True)
        falco = FAKE_FALCO_DIR / "falco"
        falco.write_text(f"#!/bin/sh\nexec {self.config['consumer']} \"$@\"\n")
        falco.chmod(0o755)
        self.cli_env["PATH"] = f"{FAKE_FALCO_DIR}:{self.cli_env['PATH']}"

    def scap_cli(self, rec: Recorder, *args: str, timeout: float = 300) -> Command:
        return self.cli(rec, *args, "--name", NAME, timeout=timeout)

    def where(self, rec: Recorder, kind: str, version: str) -> Optional[dict]:
        """Where our CLI looks for the `kind` artifact of `version`: its printenv output, taken as is."""
        cache = self.artifacts if kind == "kmod" else self.probe_artifacts
        if version not in cache:
            command = self.scap_cli(rec, "printenv", "--output", "json", "--type", kind, "--driver-version", version)
            if command.exit != 0:
                rec.check(f"printenv for {kind} {version} (names the mirror's files)", False,
                          command.stderr.strip()[-500:])
                return None
            cache[version] = artifact_from_printenv(json.loads(command.stdout))
        return cache[version]

    def publish(self, rec: Recorder, repo: str, kind: str, variants: Sequence[str]) -> Optional[str]:
        """A repository holding each variant's module (kmod) or probe (ebpf) under its driver version."""
        url = self.mirror.repo(repo)
        for name in variants:
            version = self.config["versions"][name]["version"]
            artifact = self.where(rec, kind, version)
            if artifact is None:
                return None
            self.mirror.publish(repo, artifact["path"], self.artifact_bytes(kind, name))
        return url

    def artifact_bytes(self, kind: str, name: str) -> bytes:
        return Path(self.config["modules" if kind == "kmod" else "probes"][name]).read_bytes()

    def consume(self, rec: Recorder, engine: str, *, probe: str = "", patched: bool = False,
                seconds: str = CONSUMER_SECONDS) -> Command:
        argv = [self.config["consumer"], engine, *([probe] if probe else []), seconds]
        env = dict(os.environ)
        if patched:
            env["LD_LIBRARY_PATH"] = self.config["patched_engine"]
        return rec.run(argv, env=env, timeout=300)


def parse_consumer(output: str) -> dict:
    """scap_count's lines as a dict: opened, api, schema, events, child_openat_x, drops, error."""
    found: dict = {"opened": False}
    opened = re.search(r"^SCAP-OPEN-OK .*driver_api=(\S+) driver_schema=(\S+)", output, re.M)
    if opened:
        found.update(opened=True, api=opened.group(1), schema=opened.group(2))
    failed = re.search(r"^SCAP-OPEN-FAILED (.*)$", output, re.M)
    if failed:
        found["error"] = failed.group(1)
    events = re.search(r"^SCAP-EVENTS (\d+)$", output, re.M)
    if events:
        found["events"] = int(events.group(1))
    for key in ("child_openat_x", "drops"):
        value = re.search(rf"\b{key}=(\d+)", output)
        if value:
            found[key] = int(value.group(1))
    return found


def expect_events(rec: Recorder, command: Command, what: str, api: str = "8.0.3", schema: str = "3.5.0") -> bool:
    got = parse_consumer(command.stdout)
    ok = rec.check(f"libscap opened {what} and reports API {api}, schema {schema}",
                   got["opened"] and (got.get("api"), got.get("schema")) == (api, schema),
                   got.get("error", f"api {got.get('api')}, schema {got.get('schema')}"))
    ok &= rec.check(f"libscap read live events from {what}", got.get("events", 0) > 0,
                    f"events {got.get('events')}, drops {got.get('drops')}")
    ok &= rec.check("among them the openat exits of the consumer's own child, decoded",
                    got.get("child_openat_x", 0) > 0, f"child_openat_x {got.get('child_openat_x')}")
    return ok


def expect_refused_by_libscap(rec: Recorder, command: Command, what: str, pattern: str) -> bool:
    got = parse_consumer(command.stdout)
    return rec.check(f"libscap refuses {what} too", not got["opened"] and re.search(pattern, got.get("error", ""))
                     is not None, got.get("error", command.stdout.strip()[-300:]))


def expect_scap(rec: Recorder, guest: TrixieGuest, version: Optional[str], what: str = "") -> bool:
    got = guest.version()
    label = what or (f"/sys/module/scap/version is {version}" if version else "no scap module loaded")
    return rec.check(label, got == version, f"got {got}")


def probe_from(command: Command) -> Optional[str]:
    found = re.search(r"^FALCO_BPF_PROBE=(\S+)$", command.stdout, re.M)
    return found.group(1) if found else None


# ---------------------------------------------------------------------------------------------- scenarios
def scenario_guest_facts(guest: TrixieGuest, rec: Recorder) -> None:
    """The stack itself: Debian 13's kernel, its module compression, and what our CLI makes of the host."""
    release = os.uname().release
    rec.check("the guest runs the trixie kernel", release == guest.config["kernel_release"], release)
    version = os.uname().version
    rec.check("uname -v names the Debian package version", re.search(r"Debian \d+\.\d+\.\d+-\d+", version)
              is not None, version)
    compressed = sorted({p.suffix for p in Path(f"/lib/modules/{release}/kernel/fs").rglob("*.ko*")})
    rec.check("in-tree modules are xz-compressed", compressed == [".xz"], str(compressed))
    command = guest.scap_cli(rec, "printenv", "--output", "json", "--type", "kmod", "--driver-version",
                             "8.0.0+driver")
    expect_exit(rec, command, 0)
    if command.exit == 0:
        doc = json.loads(command.stdout)
        filename = doc["candidates"][0]["filename"]
        package = re.search(r"Debian (\d+\.\d+\.\d+-\d+)", version)
        want = f"scap_debian_{package.group(1) if package else '?'}-amd64_1.ko"
        rec.check("the artifact is named after the Debian package version, as upstream's builder names it",
                  filename == want, f"{filename}, expected {want}")
    inspect = guest.cli(rec, "inspect", guest.config["modules"]["8.0.0"])
    expect_exit(rec, inspect, 0)
    # The vermagic our checks hold a module to, read from an in-tree .ko.xz and rebuilt from the kernel config,
    # against the one the kernel build system wrote into a module built for this kernel.
    derive = (
        "import json, os\n"
        "from driver_loader.host import kernel_facts as k\n"
        "r = os.uname().release\n"
        "found = k._vermagic_of_in_tree_module(f'/lib/modules/{r}/kernel')\n"
        "config = k.parse_kernel_config(open(f'/boot/config-{r}').read())\n"
        "print(json.dumps({'in_tree': found and found[0], 'from_config': k.vermagic_from_config(r, 'x86_64', config)}))\n"
    )
    derived = rec.run([guest.python, "-c", derive], env=guest.cli_env)
    built = subprocess.run(["modinfo", "-F", "vermagic", guest.config["modules"]["8.0.0"]], capture_output=True,
                           text=True).stdout.strip()
    try:
        facts = json.loads(derived.stdout)
    except ValueError:
        facts = {}
    for source in ("in_tree", "from_config"):
        got = (facts.get(source) or "").strip()
        rec.check(f"the vermagic derived {source.replace('_', ' ')} is the one a module built here carries",
                  bool(built) and got == built, f"{got!r} vs {built!r}")


def scenario_kmod_install_and_read(guest: TrixieGuest, rec: Recorder) -> None:
    """install --type kmod downloads, verifies and loads scap 8.0.0+driver; libscap's kmod engine reads events."""
    guest.fresh(rec)
    repo = guest.publish(rec, "good", "kmod", ["8.0.0", "8.1.0"])
    if repo is None:
        return
    mark = guest.mirror.mark()
    command = guest.scap_cli(rec, "install", "--type", "kmod", "--repo", repo, "--driver-version", "8.0.0+driver")
    expect_exit(rec, command, 0)
    expect_scap(rec, guest, "8.0.0+driver")
    fetched = guest.mirror.since(mark)
    rec.check("the module and its .sha256 sidecar were downloaded from the mirror",
              any(r.endswith(".ko 200") for r in fetched) and any(".sha256 " in r for r in fetched),
              "; ".join(fetched))
    expect_events(rec, guest.consume(rec, "kmod"), "the loaded module")


def scenario_ebpf_probe_and_read(guest: TrixieGuest, rec: Recorder) -> None:
    """install --type ebpf downloads and verifies the probe and prints FALCO_BPF_PROBE=<path>; libscap's bpf
    engine opens exactly that path. Debian's own engine cannot map perf buffers on this kernel (CVE-2025-38563
    fix); the engine rebuilt with bpf_engine_mmap.patch can."""
    guest.fresh(rec)
    repo = guest.publish(rec, "good-probe", "ebpf", ["8.0.0"])
    if repo is None:
        return
    command = guest.scap_cli(rec, "install", "--type", "ebpf", "--repo", repo, "--driver-version", "8.0.0+driver")
    expect_exit(rec, command, 0)
    probe = probe_from(command)
    if not rec.check("stdout is FALCO_BPF_PROBE=<path>", probe is not None, command.stdout.strip()):
        return
    assert probe is not None
    rec.check("the path holds the verified probe", Path(probe).exists()
              and sha256_file(Path(probe)) == sha256_file(Path(guest.config["probes"]["8.0.0"])), probe)
    rec.check("no kernel module was loaded", not guest.is_loaded(NAME))
    stock = guest.consume(rec, "bpf", probe=probe, seconds="1")
    stock_result = parse_consumer(stock.stdout)
    rec.check("Debian's libscap 0.20 bpf engine: opens, or fails only on the perf-buffer mmap",
              stock_result["opened"] or "unable to mmap the perf-buffer" in stock_result.get("error", ""),
              stock_result.get("error", "opened"))
    expect_events(rec, guest.consume(rec, "bpf", probe=probe, patched=True), "the probe (patched bpf engine)")


def scenario_build_on_612(guest: TrixieGuest, rec: Recorder) -> None:
    """No prebuilt: DKMS builds /usr/src/scap-8.1.0+driver for the running 6.12 with trixie's gcc 14. Under TCG on
    a busy 2-core machine that took 13 minutes and once more than the loader's default 900 s build timeout."""
    guest.fresh(rec)
    version = guest.config["dkms_version"]
    target = Path(f"/usr/src/{NAME}-{version}")
    if not target.exists():
        shutil.copytree(guest.config["dkms_sources"], target)
    command = guest.scap_cli(rec, "install", "--type", "kmod", "--repo", guest.mirror.repo("empty"),
                             "--driver-version", version, "--compile", "--build-timeout", "2400", timeout=2700)
    expect_exit(rec, command, 0)
    expect_scap(rec, guest, version)
    status = subprocess.run(["dkms", "status", "-m", NAME], capture_output=True, text=True).stdout.strip()
    rec.check(f"DKMS built {NAME} {version}", version in status and "installed" in status, status)
    proc_version = Path("/proc/version").read_text()
    built = subprocess.run(["modinfo", "-k", os.uname().release, "-F", "vermagic", NAME], capture_output=True,
                           text=True).stdout.strip()
    rec.check("the module was built for the running kernel", built.startswith(os.uname().release + " "), built)
    rec.check("the kernel was built with gcc 14, the root's gcc", "gcc-14" in proc_version
              and shutil.which("gcc-14") is not None, proc_version.strip())
    expect_events(rec, guest.consume(rec, "kmod"), "the module DKMS built")


def _refused(guest: TrixieGuest, rec: Recorder, kind: str, variant: str, words: str, libscap_says: str) -> None:
    """Falco (libscap 0.20) requires API 8.0.0 and schema 3.5.0; the mirror's only artifact is `variant`.
    install must refuse it with exit 4 before loading anything; --dry-run and inspect say why, unswapped; and
    libscap, given the same artifact, refuses it too."""
    guest.fresh(rec)
    guest.with_falco()
    repo = guest.publish(rec, f"{variant}-{kind}", kind, [variant])
    if repo is None:
        return
    kernel_lines = len(guest.dmesg())
    command = guest.scap_cli(rec, "install", "--type", kind, "--repo", repo, "--no-compile")
    expect_exit(rec, command, 4)
    rec.check(f"the message says '{words}'", words in command.output, command.stderr.strip()[-400:])
    rec.check("nothing loaded", not guest.is_loaded(NAME), guest.version() or "")
    scap_lines = [line for line in guest.dmesg()[kernel_lines:] if "scap" in line]
    rec.check("the kernel logged nothing about scap", not scap_lines, " | ".join(scap_lines))
    # --dry-run downloads nothing, so it names the rule the artifact will be held to, in the same unswapped words.
    label, required = words.split(" ")[0], words.rsplit(" ", 1)[1]
    rule = f"the {label} version must satisfy Falco's {required}"
    dry = guest.scap_cli(rec, "install", "--type", kind, "--repo", repo, "--no-compile", "--dry-run")
    rec.check(f"--dry-run says '{rule}'", dry.exit == 0 and rule in dry.output, dry.output.strip()[-400:])
    artifact = guest.artifact_bytes(kind, variant)
    path = Path(f"/tmp/{variant}.{'ko' if kind == 'kmod' else 'o'}")
    path.write_bytes(artifact)
    inspect = guest.cli(rec, "inspect", str(path))
    expect_exit(rec, inspect, 4)
    rec.check(f"inspect says '{words}'", words in inspect.output, inspect.stdout.strip()[-400:])
    shown = guest.config["versions"][variant]
    rec.check("inspect shows the artifact's own API and schema",
              re.search(rf"api version\s+{re.escape(shown['api_version'])}\b", inspect.output) is not None
              and re.search(rf"schema version\s+{re.escape(shown['schema_version'])}\b", inspect.output)
              is not None, inspect.stdout.strip()[-600:])
    if kind == "kmod":
        loaded = rec.run(["insmod", guest.config["modules"][variant]], setup=True)
        if rec.check("setup: insmod of the same module by hand", loaded.exit == 0, loaded.stderr.strip()):
            expect_refused_by_libscap(rec, guest.consume(rec, "kmod"), "the module", libscap_says)
            rec.run(["rmmod", NAME], setup=True)
    else:
        expect_refused_by_libscap(rec, guest.consume(rec, "bpf", probe=guest.config["probes"][variant],
                                                     patched=True), "the probe", libscap_says)


def scenario_api_major_kmod(guest: TrixieGuest, rec: Recorder) -> None:
    # libscap 0.20's message swaps its numbers: "Minimum API version supported by scap: 9.0.3, but the running
    # driver uses 8.0.0" (9.0.3 is the driver's).
    _refused(guest, rec, "kmod", "api-9", "api version 9.0.3 does not satisfy Falco's 8.0.0",
             r"API version")


def scenario_schema_major_probe(guest: TrixieGuest, rec: Recorder) -> None:
    _refused(guest, rec, "ebpf", "schema-4", "schema version 4.5.0 does not satisfy Falco's 3.5.0", r"MAJOR '4' != Scap MAJOR '3'")


def scenario_schema_minor_probe(guest: TrixieGuest, rec: Recorder) -> None:
    """The legacy probe's stricter rule: same schema major AND minor. 3.6.0 is refused by both."""
    _refused(guest, rec, "ebpf", "schema-3.6", "schema version 3.6.0 does not satisfy Falco's 3.5.0", r"MINOR|[Ss]chema")


def scenario_schema_minor_kmod_accepted(guest: TrixieGuest, rec: Recorder) -> None:
    """For the kernel module a newer schema minor is fine, for us and for libscap: what we accept opens."""
    guest.fresh(rec)
    guest.with_falco()
    repo = guest.publish(rec, "schema-3.6-kmod", "kmod", ["schema-3.6"])
    if repo is None:
        return
    command = guest.scap_cli(rec, "install", "--type", "kmod", "--repo", repo, "--no-compile")
    expect_exit(rec, command, 0)
    # No --driver-version and no /usr/src/scap-8.0.0+driver: only `falco --version` names 8.0.0+driver.
    expect_scap(rec, guest, "8.0.0+driver", "the version falco --version reports (8.0.0+driver) is loaded")
    expect_events(rec, guest.consume(rec, "kmod"), "the schema 3.6.0 module", schema="3.6.0")


def scenario_in_use(guest: TrixieGuest, rec: Recorder) -> None:
    """With the consumer holding /dev/scap*, install of another version and cleanup leave the module loaded,
    say who holds it, and the consumer keeps reading."""
    guest.fresh(rec)
    repo = guest.publish(rec, "good", "kmod", ["8.0.0", "8.1.0"])
    if repo is None:
        return
    first = guest.scap_cli(rec, "install", "--type", "kmod", "--repo", repo, "--driver-version", "8.0.0+driver")
    if not rec.check("setup: 8.0.0+driver installed", first.exit == 0 and guest.version() == "8.0.0+driver"):
        return
    consumer = subprocess.Popen([guest.config["consumer"], "kmod", "600"], stdout=subprocess.PIPE, text=True)
    lines: List[str] = []

    def read() -> None:
        for line in iter(consumer.stdout.readline, ""):
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(line.startswith("SCAP-TICK") for line in lines):
            time.sleep(0.2)
        if not rec.check("setup: the consumer holds the driver and reads events",
                         any(line.startswith("SCAP-TICK") for line in lines), "".join(lines)[-300:]):
            return
        for args in (("install", "--type", "kmod", "--repo", repo, "--driver-version", "8.1.0+driver",
                      "--unload-retries", "2", "--no-compile"),
                     ("cleanup", "--type", "kmod", "--unload-retries", "2")):
            command = guest.scap_cli(rec, *args)
            rec.check(f"{args[0]} fails", command.exit != 0, f"exit {command.exit}")
            rec.check(f"{args[0]} names the holder or the reference count",
                      f"pid {consumer.pid}" in command.output
                      or re.search(r"refcnt \d|refcount|reference count", command.output, re.I) is not None)
            expect_scap(rec, guest, "8.0.0+driver", f"after {args[0]}: 8.0.0+driver is still loaded")
        ticks = [int(line.split()[1]) for line in lines if line.startswith("SCAP-TICK")]
        time.sleep(3)
        later = [int(line.split()[1]) for line in lines if line.startswith("SCAP-TICK")]
        rec.check("the consumer kept reading events afterwards", consumer.poll() is None and later[-1] > ticks[-1],
                  f"{ticks[-1]} -> {later[-1]}")
    finally:
        consumer.send_signal(signal.SIGTERM)
        try:
            status = consumer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            consumer.kill()
            status = consumer.wait()
        reader.join(timeout=10)
    rec.check("the consumer ended cleanly", status == 0 and any(line.startswith("SCAP-EVENTS") for line in lines),
              f"exit {status}")


def scenario_modern_ebpf(guest: TrixieGuest, rec: Recorder) -> None:
    """6.12 has BTF and the BPF ring buffer: install --type modern_ebpf says so and writes config.d."""
    guest.fresh(rec)
    command = guest.cli(rec, "install", "--type", "modern_ebpf")
    expect_exit(rec, command, 0)
    rec.check("it reports support", re.search(r"BTF", command.output) is not None
              and re.search(r"ring ?buf", command.output, re.I) is not None, command.output.strip()[-500:])
    config = CONFIG_D / "engine-kind-falcoctl.yaml"
    text = config.read_text() if config.exists() else ""
    rec.check(f"{config} selects modern_ebpf", "modern_ebpf" in text, text)
    rec.check("no kernel module was loaded", not guest.is_loaded(NAME) and not guest.is_loaded("falco"))


SCENARIOS: Dict[str, Callable[[TrixieGuest, Recorder], None]] = {
    "guest_facts": scenario_guest_facts,
    "kmod_install_and_read": scenario_kmod_install_and_read,
    "ebpf_probe_and_read": scenario_ebpf_probe_and_read,
    "api_major_kmod": scenario_api_major_kmod,
    "schema_major_probe": scenario_schema_major_probe,
    "schema_minor_probe": scenario_schema_minor_probe,
    "schema_minor_kmod_accepted": scenario_schema_minor_kmod_accepted,
    "in_use": scenario_in_use,
    "modern_ebpf": scenario_modern_ebpf,
    "build_on_612": scenario_build_on_612,
}


def prepare_guest(config: dict) -> TrixieGuest:
    """Kernel messages off the console (they would split result lines); a Falco config dir like a node's."""
    subprocess.run(["dmesg", "-n", "1"], check=False)
    shutil.rmtree(FALCO_CONFIG_DIR, ignore_errors=True)
    FALCO_CONFIG_DIR.mkdir(parents=True)
    (FALCO_CONFIG_DIR / "falco.yaml").write_text("engine:\n  kind: kmod\n")
    sys.path.insert(0, config["checkout"])
    return TrixieGuest(config, Mirror())


def main(argv: Sequence[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    guest = prepare_guest(config)
    print(f"{GUEST_READY} kernel={os.uname().release} mirror={guest.mirror.base}", flush=True)
    return run_scenarios(guest, SCENARIOS, argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
