import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_kernel import FakeKernel

from driver_loader.artifacts.cache import ArtifactCache
from driver_loader.build.local_build import CommandResult
from driver_loader.cli.commands.cleanup import cleanup
from driver_loader.cli.commands.status import collect_status, status_text
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import ExitCode, LoaderError, LoadError, UsageError
from driver_loader.core.settings import Settings
from driver_loader.falco.config import write_engine_config
from driver_loader.host.modern_ebpf import ModernEbpfSupport
from driver_loader.kernel.modules import persist_module

REPO = Path(__file__).resolve().parent.parent
RELEASE = "6.1.0-56-amd64"


class Dkms:
    """A fake command runner with DKMS state: `dkms status` lists `versions`, `dkms remove` drops one."""

    def __init__(self, versions=(), *, failing=()):
        self.versions = list(versions)
        self.failing = set(failing)
        self.argvs = []

    def which(self, program):
        return f"/usr/sbin/{program}"

    def run(self, argv, *, timeout, env=None, cwd=None):
        argv = list(argv)
        self.argvs.append(argv)
        if argv[:2] == ["dkms", "status"]:
            name = argv[3]
            lines = [f"{name}/{v}, {RELEASE}, x86_64: installed" for v in self.versions if name == "falco"]
            return CommandResult(tuple(argv), 0, "\n".join(lines), "")
        if argv[:2] == ["dkms", "remove"]:
            version = argv[5]
            if version in self.failing:
                return CommandResult(tuple(argv), 1, "", "remove failed")
            self.versions.remove(version)
        return CommandResult(tuple(argv), 0, "", "")


@pytest.fixture
def kernel(tmp_path):
    return FakeKernel(tmp_path / "kernel")


def settings_for(tmp_path, **overrides):
    values = dict(host_root=str(tmp_path / "host"), kernel_release=RELEASE, arch="x86_64",
                  cache_dir=str(tmp_path / "cache"), falco_config_dir=str(tmp_path / "etc"), unload_retries=1)
    values.update(overrides)
    return Settings(**values)


def store(cache_dir, relative, content=b"\x7fELF"):
    source = Path(cache_dir).parent / "source.bin"
    source.write_bytes(content)
    return ArtifactCache(str(cache_dir)).store_file(str(Path(cache_dir) / relative), str(source),
                                                    verified_by="sha256-sidecar")


def modern(supported=True):
    return lambda: ModernEbpfSupport(supported, supported, supported, True, "BTF present" if supported else "no BTF")


# -- status ---------------------------------------------------------------------------------------------------------


def test_status_reports_everything_in_place(tmp_path, kernel):
    kernel.add_module("falco", "8.1.0+driver", refcnt=1)
    settings = settings_for(tmp_path)
    entry = store(settings.cache_dir, "8.0.0+driver/x86_64/falco_debian_x_1.o")
    os.symlink(entry.path, Path(settings.cache_dir) / "falco-bpf.o")
    write_engine_config(settings.falco_config_dir, DriverType.KMOD)
    report = collect_status(settings, kernel=kernel.modules(), modern_support=modern(),
                            driver_version=lambda s: "8.0.0+driver")
    assert report["module"]["loaded"] and report["module"]["version"] == "8.1.0+driver"
    assert report["module"]["refcnt"] == 1
    assert report["module"]["compatible"] is True
    assert report["compatible_range"] == ">=8.0.0,<9.0.0"
    assert report["modern_ebpf"]["supported"] is True
    assert report["ebpf_probe"] == {"path": str(Path(settings.cache_dir) / "falco-bpf.o"), "target": entry.path,
                                    "target_exists": True}
    assert [(e["path"], e["sha256"], e["verified_by"]) for e in report["cache"]["entries"]] == [
        (entry.path, entry.sha256, "sha256-sidecar")]
    assert report["falco_config"]["kind"] == "kmod"
    assert json.loads(json.dumps(report)) == report
    text = status_text(report)
    assert "falco 8.1.0+driver loaded" in text and "within >=8.0.0,<9.0.0" in text


def test_status_flags_an_incompatible_module(tmp_path, kernel):
    kernel.add_module("falco", "7.0.0+driver")
    report = collect_status(settings_for(tmp_path), kernel=kernel.modules(), modern_support=modern(False),
                            driver_version=lambda s: "8.0.0+driver")
    assert report["module"]["compatible"] is False
    assert "outside >=8.0.0,<9.0.0" in status_text(report)


def test_status_does_not_fail_without_a_driver_version(tmp_path, kernel):
    kernel.add_module("falco", "7.0.0+driver")

    def unknown(settings):
        raise UsageError("no driver version: none was given and none could be detected")

    report = collect_status(settings_for(tmp_path), kernel=kernel.modules(), modern_support=modern(),
                            driver_version=unknown)
    assert report["driver_version"] is None
    assert report["module"]["compatible"] is None
    assert "compatibility unknown" in status_text(report)


def test_status_of_an_empty_host(tmp_path):
    kernel = FakeKernel(tmp_path / "kernel", modules_supported=False)
    report = collect_status(settings_for(tmp_path), kernel=kernel.modules(), modern_support=modern(),
                            driver_version=lambda s: "8.0.0+driver")
    assert report["modules_supported"] is False
    assert report["module"] == {"name": "falco", "loaded": False}
    assert report["cache"]["entries"] == []
    assert report["falco_config"]["exists"] is False
    assert report["ebpf_probe"]["target"] is None


# -- cleanup --------------------------------------------------------------------------------------------------------


def installed_state(tmp_path, kernel):
    settings = settings_for(tmp_path)
    kernel.add_module("falco", "8.0.0+driver")
    ours = store(settings.cache_dir, "8.0.0+driver/x86_64/falco_debian_x_1.ko")
    others = store(settings.cache_dir, "8.0.0+driver/x86_64/scap_debian_x_1.ko")
    os.symlink(ours.path, Path(settings.cache_dir) / "falco-bpf.o")
    write_engine_config(settings.falco_config_dir, DriverType.KMOD)
    persist_module(b"\x7fELF", name="falco", release=RELEASE, host_root=settings.host_root, runner=Dkms())
    return settings, ours, others


def test_cleanup_removes_what_install_left(tmp_path, kernel):
    settings, ours, others = installed_state(tmp_path, kernel)
    dkms = Dkms(["8.0.0+driver", "7.0.0+driver"])
    actions = cleanup(settings, clean_cache=True, kernel=kernel.modules(), runner=dkms)
    assert kernel.module_version("falco") is None
    assert kernel.syscall_names() == ["delete_module"]
    assert dkms.versions == []
    assert ["dkms", "remove", "-m", "falco", "-v", "8.0.0+driver", "--all"] in dkms.argvs
    assert ["depmod", "-b", settings.host_root, "-a", RELEASE] in dkms.argvs
    assert not (Path(settings.host_root) / f"lib/modules/{RELEASE}/extra/falco.ko").exists()
    assert not os.path.lexists(Path(settings.cache_dir) / "falco-bpf.o")
    assert not (Path(settings.falco_config_dir) / "config.d/engine-kind-falcoctl.yaml").exists()
    assert not os.path.exists(ours.path)
    assert os.path.exists(others.path)
    assert "unloaded falco 8.0.0+driver" in actions
    assert f"removed {ours.path} from the cache" in actions


def test_cleanup_cache_also_removes_artifacts_put_there_by_hand(tmp_path, kernel):
    settings = settings_for(tmp_path)
    seeded = Path(settings.cache_dir) / "8.0.0+driver/x86_64/falco_debian_x_1.ko"
    seeded.parent.mkdir(parents=True)
    seeded.write_bytes(b"\x7fELF")
    actions = cleanup(settings, clean_cache=True, kernel=kernel.modules(), runner=Dkms())
    assert actions == [f"removed {seeded} from the cache"]
    assert not seeded.exists()


def test_cleanup_keeps_the_cache_unless_asked(tmp_path, kernel):
    settings, ours, _ = installed_state(tmp_path, kernel)
    cleanup(settings, kernel=kernel.modules(), runner=Dkms())
    assert os.path.exists(ours.path)


def test_cleanup_is_idempotent(tmp_path, kernel):
    settings, _, _ = installed_state(tmp_path, kernel)
    cleanup(settings, clean_cache=True, kernel=kernel.modules(), runner=Dkms(["8.0.0+driver"]))
    kernel.calls.clear()
    assert cleanup(settings, clean_cache=True, kernel=kernel.modules(), runner=Dkms()) == []
    assert kernel.calls == []


def test_cleanup_respects_no_update_falco(tmp_path, kernel):
    settings = settings_for(tmp_path, update_falco=False)
    path, _ = write_engine_config(settings.falco_config_dir, DriverType.KMOD)
    cleanup(settings, kernel=kernel.modules(), runner=Dkms())
    assert os.path.exists(path)


def test_cleanup_of_a_busy_module_fails_after_cleaning_the_rest(tmp_path, kernel):
    settings, _, _ = installed_state(tmp_path, kernel)
    kernel.always_busy = True
    with pytest.raises(LoadError) as caught:
        cleanup(settings, kernel=kernel.modules(), runner=Dkms(["8.0.0+driver"], failing=["8.0.0+driver"]))
    error = caught.value
    assert error.exit_code == ExitCode.LOAD
    assert "still in use" in error.message
    assert "also: dkms remove of falco 8.0.0+driver failed" in error.tried
    assert kernel.syscall_names() == ["delete_module"] * 2
    assert kernel.module_version("falco") == "8.0.0+driver"
    assert not (Path(settings.falco_config_dir) / "config.d/engine-kind-falcoctl.yaml").exists()


def test_cleanup_of_a_loaded_module_needs_root(tmp_path, kernel):
    settings, _, _ = installed_state(tmp_path, kernel)
    kernel.euid = 1000
    with pytest.raises(LoaderError, match="needs root"):
        cleanup(settings, kernel=kernel.modules(), runner=Dkms())
    assert kernel.calls == []


# -- the commands on this machine -----------------------------------------------------------------------------------


def run_cli(tmp_path, *args):
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "driver_loader", *args], cwd=REPO, capture_output=True, text=True,
                          env=env)


def test_status_json_here(tmp_path):
    proc = run_cli(tmp_path, "status", "--output", "json", "--driver-version", "8.0.0+driver",
                   "--cache-dir", str(tmp_path / "cache"), "--falco-config-dir", str(tmp_path / "etc"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["modules_supported"] == os.path.exists("/proc/modules")
    assert report["compatible_range"] == ">=8.0.0,<9.0.0"
    assert report["falco_config"]["path"] == str(tmp_path / "etc/config.d/engine-kind-falcoctl.yaml")


def test_cleanup_with_nothing_to_clean_exits_0(tmp_path):
    # A driver name nothing on this machine uses, so the real dkms (if any) has nothing to remove.
    args = ["cleanup", "--cache", "--name", "loader-test-nothing", "--cache-dir", str(tmp_path / "cache"),
            "--falco-config-dir", str(tmp_path / "etc"), "--host-root", str(tmp_path / "host")]
    proc = run_cli(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to clean" in proc.stderr
