"""The install pipeline end to end, with the kernel, network, builds and the running kernel's facts faked."""

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_runner import cli_runner
from elf_fixtures import DEFAULT_VERMAGIC, make_bpf_probe, make_kmod
from fake_kernel import FakeKernel

from driver_loader.build.local_build import BuildResult
from driver_loader.cli.main import cli
from driver_loader.core import checks
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import (
    ExitCode,
    LoaderError,
    NoDriverError,
    UnsupportedHostError,
    UsageError,
    VerificationError,
)
from driver_loader.core.kernel import RunningKernel
from driver_loader.core.settings import Settings, VerifyOptions
from driver_loader.host.modern_ebpf import ModernEbpfSupport
from driver_loader.net.fetch import FetchResult
from driver_loader.pipeline.install import Edges, InstallResult, dry_run, install

REPO = Path(__file__).resolve().parent.parent
RELEASE = "6.1.0-56-amd64"
KERNEL_VERSION = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-10)"
CONFIG = "config.d/engine-kind-falcoctl.yaml"


class FakeSource:
    """Stands in for fetch_artifact or build_artifact: stores the given file in the cache like they do."""

    def __init__(self, kind):
        self.kind = kind
        self.files = []
        self.error = None
        self.calls = 0
        self.stored = []

    def __call__(self, plan, settings, *, cache, **kwargs):
        self.calls += 1
        if self.error is not None:
            raise self.error
        if not self.files:
            raise AssertionError(f"unexpected {self.kind}")
        destination = plan.candidates[0].cache_path
        verified_by = "sha256-sidecar" if self.kind == "download" else "local-build"
        entry = cache.store_file(destination, str(self.files.pop(0)), verified_by=verified_by)
        self.stored.append(destination)
        if self.kind == "download":
            return FetchResult(destination, plan.driver_version, entry.sha256, "http://127.0.0.1/x", verified_by,
                               "download")
        return BuildResult(destination, entry.sha256, verified_by, None)


class Runner:
    def __init__(self):
        self.argvs = []

    def run(self, argv, *, timeout, env=None, cwd=None):
        self.argvs.append(list(argv))

        class Ok:
            ok = True
            output = ""

        return Ok()


class World:
    def __init__(self, tmp_path, *, modules_supported=True):
        self.tmp = tmp_path
        self.host = tmp_path / "host"
        (self.host / "etc").mkdir(parents=True)
        (self.host / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\n")
        self.kernel = FakeKernel(tmp_path / "kernel", modules_supported=modules_supported)
        self.fetch = FakeSource("download")
        self.build = FakeSource("build")
        self.running = RunningKernel(release=RELEASE, arch="x86_64", modules_supported=modules_supported,
                                     vermagic=DEFAULT_VERMAGIC, vermagic_source="test")
        self.modern = ModernEbpfSupport(False, False, None, True, "no kernel BTF")
        self.runner = Runner()
        self.made = 0

    @property
    def cache_dir(self):
        return self.tmp / "cache"

    @property
    def config_dir(self):
        return self.tmp / "etc-falco"

    def settings(self, **overrides):
        values = dict(
            host_root=str(self.host), kernel_release=RELEASE, kernel_version=KERNEL_VERSION, arch="x86_64",
            driver_types=(DriverType.KMOD,), driver_version="8.0.0+driver", repos=("http://127.0.0.1:9/repo",),
            cache_dir=str(self.cache_dir), falco_config_dir=str(self.config_dir), unload_retries=2,
        )
        values.update(overrides)
        return Settings(**values)

    def edges(self):
        return Edges(kernel=self.kernel.modules(), modern_support=lambda: self.modern,
                     running_kernel=self.running_kernel, fetch=self.fetch, build=self.build, runner=self.runner)

    def running_kernel(self, plan):
        if self.running is None:
            raise AssertionError("the running kernel's facts were read")
        return self.running

    def install(self, **overrides):
        return install(self.settings(**overrides), self.edges())

    def module(self, **fields):
        self.made += 1
        directory = self.tmp / "made" / str(self.made)
        directory.mkdir(parents=True)
        return make_kmod(directory, **fields)

    def probe(self, **fields):
        self.made += 1
        directory = self.tmp / "made" / str(self.made)
        directory.mkdir(parents=True)
        return make_bpf_probe(directory, kernel_version=RELEASE, **fields)

    def fetch_filename(self):
        from driver_loader.pipeline.resolve import resolve_plan

        plan = resolve_plan(self.settings(), modules_supported=True, modern_ebpf_supported=False)
        return plan.candidates[0].filename

    def config(self):
        path = self.config_dir / CONFIG
        return path.read_text() if path.exists() else None


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


# -- the already-loaded fast path -----------------------------------------------------------------------------------


def test_a_compatible_loaded_module_is_kept_without_network_build_or_parsing(world):
    world.kernel.add_module("falco", "8.1.0+driver")
    world.running = None  # reading the running kernel's facts would fail the test
    result = world.install()
    assert (result.source, result.version, result.artifact) == ("loaded", "8.1.0+driver", None)
    assert world.fetch.calls == 0 and world.build.calls == 0
    assert world.kernel.calls == []
    assert world.config() == "engine:\n    kind: kmod\n"


def test_fast_path_stays_light_and_says_already_loaded(tmp_path):
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc/os-release").write_text("ID=debian\n")
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO / "tests")!r})
        from fake_kernel import FakeKernel
        from driver_loader.core.driver_types import DriverType
        from driver_loader.pipeline.install import Edges, install
        from driver_loader.core.settings import Settings

        def forbidden(*args, **kwargs):
            raise AssertionError("the fast path must not fetch, build or read ELF files")

        kernel = FakeKernel(Path({str(tmp_path / "kernel")!r}))
        kernel.add_module("falco", "8.0.0+driver")
        settings = Settings(host_root={str(host)!r}, kernel_release="{RELEASE}", kernel_version="#1 SMP",
                            arch="x86_64", driver_types=(DriverType.KMOD,), driver_version="8.0.0+driver",
                            cache_dir={str(tmp_path / "cache")!r}, falco_config_dir={str(tmp_path / "etc")!r})
        result = install(settings, Edges(kernel=kernel.modules(), fetch=forbidden, build=forbidden,
                                         running_kernel=forbidden, modern_support=forbidden))
        heavy = ["requests", "urllib3", "elftools", "structlog", "driver_loader.net.fetch", "driver_loader.artifacts.elf",
                 "driver_loader.core.checks", "driver_loader.build.local_build", "driver_loader.artifacts.cache"]
        print(json.dumps({{"source": result.source, "imported": [m for m in heavy if m in sys.modules]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    # Not even structlog: on the fast path every log line is below the default level.
    assert json.loads(proc.stdout) == {"source": "loaded", "imported": []}


# -- loading --------------------------------------------------------------------------------------------------------


def test_download_verify_load_and_configure(world):
    artifact = world.module()
    world.fetch.files.append(artifact)
    result = world.install()
    assert result.driver_type is DriverType.KMOD
    assert (result.source, result.version) == ("download", "8.0.0+driver")
    assert result.artifact == world.fetch.stored[0]
    assert world.kernel.syscall_names() == ["finit_module"]
    assert world.kernel.loaded_images == [artifact.read_bytes()]
    assert world.kernel.module_version("falco") == "8.0.0+driver"
    assert world.config() == "engine:\n    kind: kmod\n"
    assert result.to_dict()["type"] == "kmod"
    assert any(a.startswith("loaded falco 8.0.0+driver") for a in result.actions)


def test_upgrade_unloads_the_old_module_then_loads_the_new_one(world):
    world.kernel.add_module("falco", "7.0.0+driver")
    world.fetch.files.append(world.module())
    result = world.install()
    assert world.kernel.syscall_names() == ["delete_module", "finit_module"]
    assert world.kernel.module_version("falco") == "8.0.0+driver"
    assert "unloaded falco 7.0.0+driver" in result.actions


def test_the_descriptor_loaded_is_the_one_whose_bytes_were_verified(world, monkeypatch):
    good = world.module()
    swapped = world.module(version="8.0.0+driver", vermagic="6.1.0-56-amd64 SMP mod_unload ")
    swapped_bytes = swapped.read_bytes()
    world.fetch.files.append(good)
    real_check = checks.check_artifact

    def check_then_swap_the_file(*args, **kwargs):  # the bytes are read; replace the file behind them
        findings = real_check(*args, **kwargs)
        os.replace(swapped, world.fetch.stored[0])
        return findings

    monkeypatch.setattr(checks, "check_artifact", check_then_swap_the_file)
    world.install()
    assert world.kernel.loaded_images == [good.read_bytes()]
    assert Path(world.fetch.stored[0]).read_bytes() == swapped_bytes != good.read_bytes()


def test_a_file_changed_since_its_digest_was_recorded_is_refused(world):
    world.fetch.files.append(world.module())
    fetch = world.fetch

    def tampering_fetch(plan, settings, *, cache, **kwargs):
        result = fetch(plan, settings, cache=cache)
        with open(result.path, "ab") as out:
            out.write(b"tampered")
        return result

    edges = world.edges()
    edges.fetch = tampering_fetch
    with pytest.raises(VerificationError, match="changed after it was verified") as caught:
        install(world.settings(compile=False), edges)
    assert caught.value.exit_code == ExitCode.VERIFICATION
    assert world.kernel.calls == []


def test_a_module_failing_the_pre_load_checks_is_never_loaded(world):
    world.fetch.files.append(world.module(vermagic="6.1.0-99-amd64 SMP mod_unload ", modversions=False))
    with pytest.raises(VerificationError) as caught:
        world.install(compile=False)
    error = caught.value
    assert error.exit_code == ExitCode.VERIFICATION
    assert "nothing was loaded" in error.message
    assert any(item.startswith("vermagic:") for item in error.tried)
    assert any(item.startswith("kernel_release:") for item in error.tried)
    assert error.hint
    assert world.kernel.calls == []
    assert world.kernel.module_version("falco") is None
    assert world.config() is None
    assert not os.path.exists(world.fetch.stored[0])  # nothing that cannot load is kept


def test_a_module_with_another_name_is_refused(world):
    world.fetch.files.append(world.module(name="scap"))
    with pytest.raises(VerificationError, match="calls itself 'scap'"):
        world.install(compile=False)
    assert world.kernel.calls == []


def test_a_downloaded_module_that_cannot_load_falls_back_to_a_build(world):
    world.fetch.files.append(world.module(vermagic="6.1.0-56-amd64 SMP mod_unload "))
    world.build.files.append(world.module())
    result = world.install()
    assert result.source == "build"
    assert world.kernel.loaded_images[0] == Path(result.artifact).read_bytes()
    assert world.kernel.module_version("falco") == "8.0.0+driver"


def test_a_busy_old_module_stops_the_install_and_stays_loaded(world):
    world.kernel.add_module("falco", "7.0.0+driver", refcnt=2, holders=["falco_helper"])
    world.kernel.always_busy = True
    with pytest.raises(LoaderError) as caught:
        world.install()
    assert caught.value.exit_code == ExitCode.LOAD
    assert "falco_helper" in caught.value.message and "refcnt 2" in caught.value.message
    assert world.kernel.syscall_names() == ["delete_module"] * 3
    assert world.kernel.module_version("falco") == "7.0.0+driver"
    assert world.config() is None
    assert world.fetch.calls == 0


def test_a_kernel_refusal_names_the_likely_cause_and_leaves_falco_alone(world):
    world.running = RunningKernel(release=RELEASE, arch="x86_64", modules_supported=True, vermagic=None,
                                  vermagic_source="unavailable: no in-tree module and no kernel config found")
    world.kernel.finit_errors = [errno.ENOEXEC]
    world.fetch.files.append(world.module())
    with pytest.raises(LoaderError) as caught:
        world.install()
    assert caught.value.exit_code == ExitCode.LOAD
    assert "Invalid module format" in caught.value.message
    assert "cannot check vermagic" in caught.value.message
    assert world.config() is None


def test_loading_needs_root(world):
    world.kernel.euid = 1000
    with pytest.raises(LoaderError) as caught:
        world.install()
    assert caught.value.exit_code == ExitCode.RUNTIME
    assert "root" in caught.value.message and caught.value.hint
    assert world.fetch.calls == 0


def test_persist_installs_the_verified_module_for_modprobe(world):
    artifact = world.module()
    world.fetch.files.append(artifact)
    result = world.install(persist=True)
    persisted = world.host / "lib/modules" / RELEASE / "extra/falco.ko"
    assert persisted.read_bytes() == artifact.read_bytes()
    assert world.runner.argvs == [["depmod", "-b", str(world.host), "-a", RELEASE]]
    assert any("depmod" in a for a in result.actions)


def test_a_config_write_failure_is_an_error_after_the_driver_is_in_place(world):
    world.fetch.files.append(world.module())
    world.config_dir.write_text("a file where a directory should be")
    with pytest.raises(LoaderError) as caught:
        world.install()
    assert caught.value.exit_code == ExitCode.RUNTIME
    assert "cannot write Falco's driver config" in caught.value.message
    assert world.kernel.module_version("falco") == "8.0.0+driver"


def test_no_update_falco_leaves_the_config_alone(world):
    world.fetch.files.append(world.module())
    result = world.install(update_falco=False)
    assert result.falco_config is None and world.config() is None


# -- where the artifact comes from ----------------------------------------------------------------------------------


def test_no_download_uses_a_verified_cache_entry(world):
    world.build.files.append(world.module())
    built = world.install(download=False)
    world.kernel.delete_module("falco", 0)  # as after a reboot
    result = world.install(download=False, compile=False)
    assert (result.source, result.artifact) == ("cache", built.artifact)
    assert world.fetch.calls == 0 and world.build.calls == 1
    assert world.kernel.module_version("falco") == "8.0.0+driver"


def test_nothing_cached_and_nothing_allowed_is_no_driver(world):
    with pytest.raises(NoDriverError) as caught:
        world.install(download=False, compile=False)
    assert caught.value.exit_code == ExitCode.NO_DRIVER
    assert any(item.startswith("cache: ") for item in caught.value.tried)


def test_download_not_found_without_compile_is_exit_3_with_what_was_tried(world):
    world.fetch.error = NoDriverError("no prebuilt kmod was found", tried=["http://127.0.0.1:9/repo/x.ko: 404"])
    with pytest.raises(NoDriverError) as caught:
        world.install(compile=False)
    assert caught.value.exit_code == ExitCode.NO_DRIVER
    assert caught.value.tried == ("http://127.0.0.1:9/repo/x.ko: 404",)
    assert world.build.calls == 0


def test_download_and_build_failures_are_both_reported(world):
    world.fetch.error = NoDriverError("no prebuilt kmod was found", tried=["x.ko: 404"])
    world.build.error = NoDriverError("DKMS could not build the falco kernel module", tried=["make.log: error"],
                                      hint="install the kernel headers")
    with pytest.raises(NoDriverError) as caught:
        world.install()
    error = caught.value
    assert error.exit_code == ExitCode.NO_DRIVER
    assert "download failed" in error.message and "build failed" in error.message
    assert "download: no prebuilt kmod was found" in error.tried
    assert "build: DKMS could not build the falco kernel module" in error.tried
    assert "  make.log: error" in error.tried
    assert error.hint == "install the kernel headers"


def test_compile_only_builds(world):
    world.build.files.append(world.module())
    result = world.install(download=False)
    assert result.source == "build" and world.fetch.calls == 0


# -- driver type choice ---------------------------------------------------------------------------------------------


def test_no_module_support_is_an_unsupported_host_pointing_to_modern_ebpf(tmp_path):
    world = World(tmp_path, modules_supported=False)
    world.modern = ModernEbpfSupport(True, True, True, True, "BTF present")
    with pytest.raises(UnsupportedHostError) as caught:
        world.install()
    assert caught.value.exit_code == ExitCode.UNSUPPORTED_HOST
    assert "modern_ebpf" in caught.value.hint
    assert world.fetch.calls == 0


def test_default_types_prefer_modern_ebpf_when_supported(world):
    world.modern = ModernEbpfSupport(True, True, True, True, "BTF present")
    result = world.install(driver_types=(DriverType.MODERN_EBPF, DriverType.KMOD))
    assert (result.driver_type, result.source, result.artifact) == (DriverType.MODERN_EBPF, "builtin", None)
    assert world.kernel.calls == [] and world.fetch.calls == 0
    assert world.config() == "engine:\n    kind: modern_ebpf\n"


def test_default_types_fall_back_to_kmod_without_modern_ebpf(world):
    world.fetch.files.append(world.module())
    result = world.install(driver_types=(DriverType.MODERN_EBPF, DriverType.KMOD))
    assert result.driver_type is DriverType.KMOD
    assert world.config() == "engine:\n    kind: kmod\n"


# -- the legacy eBPF probe ------------------------------------------------------------------------------------------


def test_ebpf_probe_is_verified_linked_and_configured(world):
    world.fetch.files.append(world.probe())
    result = world.install(driver_types=(DriverType.EBPF,))
    link = world.cache_dir / "falco-bpf.o"
    assert os.readlink(link) == result.artifact == world.fetch.stored[0]
    assert result.probe == str(link)
    assert world.config() == f"engine:\n    kind: ebpf\n    ebpf:\n        probe: {link}\n"
    assert world.kernel.calls == []


def test_ebpf_link_to_an_older_probe_is_repointed(world):
    link = world.cache_dir / "falco-bpf.o"
    world.cache_dir.mkdir()
    os.symlink("/root/.falco/7.0.0+driver/x86_64/old.o", link)
    world.fetch.files.append(world.probe())
    result = world.install(driver_types=(DriverType.EBPF,))
    assert os.readlink(link) == result.artifact
    assert f"linked {link} -> {result.artifact}" in result.actions
    assert [p.name for p in world.cache_dir.iterdir() if "bpf" in p.name] == ["falco-bpf.o"]


def test_ebpf_probe_for_another_kernel_is_refused(world):
    directory = world.tmp / "other"
    directory.mkdir()
    world.fetch.files.append(make_bpf_probe(directory, kernel_version="6.1.0-1-amd64"))
    with pytest.raises(VerificationError):
        world.install(driver_types=(DriverType.EBPF,), compile=False)
    assert not os.path.lexists(world.cache_dir / "falco-bpf.o")
    assert world.config() is None


# -- dry run and the command ----------------------------------------------------------------------------------------


def test_dry_run_changes_nothing(world):
    world.kernel.add_module("falco", "7.0.0+driver")
    report = dry_run(world.settings(dry_run=True), world.edges())
    text = "\n".join(report.steps)
    assert "unload the loaded module falco 7.0.0+driver" in text
    assert "http://127.0.0.1:9/repo/8.0.0%2Bdriver/x86_64/" in text
    assert "finit_module" in text
    assert world.kernel.calls == [] and world.fetch.calls == 0 and world.build.calls == 0
    assert not world.cache_dir.exists() and not world.config_dir.exists()


def test_dry_run_reports_the_fast_path(world):
    world.kernel.add_module("falco", "8.0.0+driver")
    report = dry_run(world.settings(dry_run=True), world.edges())
    assert report.steps[0].startswith("nothing to do: module falco 8.0.0+driver is already loaded")


def fake_command_install(result):
    def fake(settings):
        return result

    return fake


def test_command_prints_the_probe_for_ebpf(monkeypatch):
    result = InstallResult(DriverType.EBPF, "cache", artifact="/c/p.o", version="8.0.0+driver",
                           probe="/root/.falco/falco-bpf.o")
    monkeypatch.setattr("driver_loader.cli.commands.install.install", fake_command_install(result))
    run = cli_runner().invoke(cli, ["install", "--type", "ebpf", "--driver-version", "8.0.0+driver"])
    assert run.exit_code == 0, run.output
    assert run.stdout == "FALCO_BPF_PROBE=/root/.falco/falco-bpf.o\n"


def test_command_prints_a_json_result(monkeypatch):
    result = InstallResult(DriverType.KMOD, "download", artifact="/c/f.ko", version="8.0.0+driver",
                           actions=("loaded falco",))
    monkeypatch.setattr("driver_loader.cli.commands.install.install", fake_command_install(result))
    run = cli_runner().invoke(cli, ["install", "--output", "json", "--driver-version", "8.0.0+driver"])
    assert run.exit_code == 0, run.output
    doc = json.loads(run.stdout)
    assert {k: doc[k] for k in ("type", "artifact", "version", "source", "actions")} == {
        "type": "kmod", "artifact": "/c/f.ko", "version": "8.0.0+driver", "source": "download",
        "actions": ["loaded falco"]}


# -- on this machine, for real --------------------------------------------------------------------------------------


def run_cli(tmp_path, *args):
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "driver_loader", *args], cwd=REPO, capture_output=True, text=True,
                          env=env)


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="needs a kernel with BTF")
def test_modern_ebpf_install_really_succeeds_here(tmp_path):
    proc = run_cli(tmp_path, "install", "--type", "modern_ebpf", "--driver-version", "8.0.0+driver",
                   "--falco-config-dir", str(tmp_path / "etc"), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "etc" / CONFIG).read_text() == "engine:\n    kind: modern_ebpf\n"


@pytest.mark.skipif(os.path.exists("/proc/modules"), reason="this kernel supports modules")
def test_kmod_install_exits_6_without_module_support(tmp_path):
    proc = run_cli(tmp_path, "install", "--type", "kmod", "--driver-version", "8.0.0+driver",
                   "--falco-config-dir", str(tmp_path / "etc"), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 6, proc.stderr
    assert "modern_ebpf" in proc.stderr
    assert not (tmp_path / "etc").exists()


@pytest.mark.skipif(os.path.exists("/proc/modules") or not os.path.exists("/sys/kernel/btf/vmlinux"),
                    reason="expects a BTF kernel without module support")
def test_default_types_pick_modern_ebpf_here(tmp_path):
    proc = run_cli(tmp_path, "install", "--driver-version", "8.0.0+driver", "--output", "json",
                   "--falco-config-dir", str(tmp_path / "etc"), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["type"] == "modern_ebpf"


def test_cli_dry_run_changes_nothing(tmp_path):
    proc = run_cli(tmp_path, "install", "--dry-run", "--type", "modern_ebpf,kmod", "--driver-version",
                   "8.0.0+driver", "--repo", "http://127.0.0.1:9/repo", "--falco-config-dir", str(tmp_path / "etc"),
                   "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode in (0, 6), proc.stderr
    if proc.returncode == 0:
        assert "would: " in proc.stdout and 'DRIVER_VERSION="8.0.0+driver"' in proc.stdout
    assert not (tmp_path / "etc").exists() and not (tmp_path / "cache").exists()


# -- one acquisition policy for every path ---------------------------------------------------------------------------


def _cache_unverified_module(world, verified_by="none (recorded digest)"):
    """A module in the cache as a download from a repository without checksums leaves it."""
    from driver_loader.artifacts.cache import ArtifactCache
    from driver_loader.pipeline.resolve import resolve_plan

    plan = resolve_plan(world.settings(), modules_supported=True, modern_ebpf_supported=False)
    module = world.module()
    return ArtifactCache(str(world.cache_dir)).store_file(plan.candidates[0].cache_path, str(module),
                                                          verified_by=verified_by)


def test_strict_refuses_an_unchecked_cache_entry_without_download_and_loads_nothing(world):
    entry = _cache_unverified_module(world)
    settings = dict(download=False, compile=False, verify=VerifyOptions(policy="strict"))
    with pytest.raises(VerificationError) as caught:
        world.install(**settings)
    assert "--verify strict" in caught.value.message
    assert world.kernel.module_version("falco") is None
    steps = dry_run(world.settings(**settings), world.edges()).steps
    assert any("skip the cached artifact" in step and "--verify strict" in step for step in steps)
    assert not any(step.startswith("run the pre-load checks") for step in steps)
    assert os.path.exists(entry.path)  # --dry-run changes nothing


def test_a_checksums_file_contradicting_the_cache_entry_is_honoured_without_download(world, tmp_path):
    _cache_unverified_module(world, verified_by="sha256-sidecar")
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'0' * 64}  8.0.0+driver/x86_64/{world.fetch_filename()}\n")
    with pytest.raises(VerificationError) as caught:
        world.install(download=False, compile=False, verify=VerifyOptions(checksums_file=str(sums)))
    assert "pinned" in caught.value.message and "checksums file" in caught.value.message
    assert world.kernel.module_version("falco") is None


def test_a_pinned_cache_entry_is_used_without_download(world, tmp_path):
    entry = _cache_unverified_module(world)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{entry.sha256}  {world.fetch_filename()}\n")
    result = world.install(download=False, compile=False,
                           verify=VerifyOptions(policy="strict", checksums_file=str(sums)))
    assert result.source == "cache"
    assert world.kernel.module_version("falco") == "8.0.0+driver"


def test_strict_builds_instead_of_reusing_an_unchecked_cache_entry(world):
    _cache_unverified_module(world)
    world.build.files.append(world.module())
    result = world.install(download=False, verify=VerifyOptions(policy="strict"))
    assert result.source == "build" and world.build.calls == 1


def test_modern_ebpf_needs_no_driver_version(world, monkeypatch):
    from driver_loader.host import version_source

    monkeypatch.setattr(version_source, "_falco_versions", lambda _binary: None)
    monkeypatch.setattr(version_source, "version_from_sources", lambda _name, _roots: None)
    world.modern = ModernEbpfSupport(True, True, True, True, "BTF present")
    for types in ((DriverType.MODERN_EBPF,), (DriverType.MODERN_EBPF, DriverType.KMOD)):
        result = world.install(driver_version=None, driver_types=types)
        assert result.source == "builtin" and result.driver_type is DriverType.MODERN_EBPF
    assert world.fetch.calls == 0 and world.build.calls == 0
    with pytest.raises(UsageError) as caught:
        world.install(driver_version=None, driver_types=(DriverType.KMOD,))
    assert caught.value.exit_code == ExitCode.USAGE


def test_a_refused_download_is_the_cause_named_first_when_the_build_cannot_run_either(world):
    world.fetch.error = VerificationError("checksum mismatch for falco.ko", hint="the repository served another file")
    world.build.error = NoDriverError("no driver sources in /usr/src/falco-8.0.0+driver",
                                      hint="install the falco package, which ships /usr/src/falco-8.0.0+driver")
    with pytest.raises(VerificationError) as caught:
        world.install()
    assert caught.value.exit_code == ExitCode.VERIFICATION
    assert caught.value.hint.startswith("the repository served another file")
    assert "to build locally instead: install the falco package" in caught.value.hint


def test_dry_run_names_the_api_and_schema_falco_requires(world, monkeypatch):
    from driver_loader.host import version_source

    monkeypatch.setattr(version_source, "_falco_versions", lambda _binary: {
        "default_driver_version": "8.0.0+driver", "driver_api_version": "8.0.0", "driver_schema_version": "3.5.0"})
    text = "\n".join(dry_run(world.settings(dry_run=True, driver_version=None), world.edges()).steps)
    assert "run the pre-load checks (the api version must satisfy Falco's 8.0.0 (same major, minor.patch >=); " \
           "the schema version must satisfy Falco's 3.5.0 (same major, minor.patch >=))" in text
