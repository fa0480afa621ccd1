"""`inspect` end to end: the report, the verdict and the exit status, on compiled artifacts and a fake kernel."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from elf_fixtures import compress_file, make_bpf_probe, make_kmod, patch_machine

from driver_loader.cli.commands import inspect as inspect_command
from driver_loader.cli.main import cli
from driver_loader.core.artifact_facts import EM_AARCH64
from driver_loader.core.errors import ExitCode, VerificationError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = "6.1.0-56-amd64"
VERMAGIC = f"{RELEASE} SMP preempt mod_unload modversions "


@pytest.fixture
def machine(tmp_path, host_root, monkeypatch):
    """A fake machine: /proc and /sys under tmp_path, a host root whose /lib/modules/<RELEASE> has one module.

    Call it with sig_enforce=True or modules=False to change the kernel's state; it returns the host root.
    """

    def make(*, modules=True, sig_enforce=False, running=RELEASE):
        proc, sys_ = tmp_path / "proc", tmp_path / "sys"
        (sys_ / "module/module/parameters").mkdir(parents=True, exist_ok=True)
        proc.mkdir(exist_ok=True)
        if modules:
            (proc / "modules").write_text("")
        (sys_ / "module/module/parameters/sig_enforce").write_text("Y\n" if sig_enforce else "N\n")
        monkeypatch.setattr(inspect_command, "PROC_ROOT", str(proc))
        monkeypatch.setattr(inspect_command, "SYS_ROOT", str(sys_))
        monkeypatch.setattr(inspect_command, "running_release", lambda: running)
        build = tmp_path / "in-tree"
        build.mkdir(exist_ok=True)
        in_tree = make_kmod(build, name="ext4", vermagic=VERMAGIC)
        return host_root({f"lib/modules/{RELEASE}/kernel/fs/ext4/ext4.ko": in_tree.read_bytes()})

    return make


def inspect(root, path, *args):
    runner = CliRunner()
    return runner.invoke(
        cli,
        ["inspect", str(path), "--host-root", root, "--kernel-release", RELEASE, "--arch", "x86_64", *args],
    )


def test_matching_module_fits(tmp_path, machine):
    root = machine()
    result = inspect(root, make_kmod(tmp_path, vermagic=VERMAGIC))

    assert result.exit_code == 0, result.output
    assert "verdict: fits kernel 6.1.0-56-amd64" in result.output
    assert "vermagic:" in result.output and repr(VERMAGIC) in result.output
    assert f"modinfo of {root}/lib/modules/{RELEASE}/kernel/fs/ext4/ext4.ko" in result.output
    assert "FAIL" not in result.output


def test_json_report(tmp_path, machine):
    root = machine()
    module = make_kmod(tmp_path, vermagic=VERMAGIC, signed=True)
    result = inspect(root, module, "--output", "json", "--driver-version", "8.0.0+driver")

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == {"file", "sha256", "artifact", "kernel", "compatible_range", "checks", "fits", "reasons"}
    assert report["fits"] is True and report["reasons"] == []
    assert report["compatible_range"] == ">=8.0.0,<9.0.0"
    assert report["artifact"]["name"] == "falco"
    assert report["artifact"]["signature"]["signed"] is True
    assert report["kernel"]["vermagic"] == VERMAGIC
    assert report["kernel"]["modules_supported"] is True
    assert "driver_version" in [check["code"] for check in report["checks"]]
    assert report["sha256"] == hashlib.sha256(module.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("make", "machine_state", "args", "failed_code"),
    [
        (lambda d: patch_machine(make_kmod(d, vermagic=VERMAGIC), EM_AARCH64), {}, [], "elf_machine"),
        (lambda d: make_kmod(d, vermagic=f"{RELEASE} SMP mod_unload "), {}, [], "vermagic"),
        (lambda d: make_kmod(d, vermagic="6.1.0-55-amd64 SMP preempt mod_unload modversions ", modversions=False),
         {}, [], "kernel_release"),
        (lambda d: make_kmod(d, vermagic=VERMAGIC), {"sig_enforce": True}, [], "signature"),
        (lambda d: make_kmod(d, vermagic=VERMAGIC), {"modules": False}, [], "modules_unsupported"),
        (lambda d: make_kmod(d, vermagic=VERMAGIC, version="9.0.0+driver"), {}, ["--driver-version", "8.0.0+driver"],
         "driver_version"),
        (lambda d: make_bpf_probe(d, kernel_version="6.1.0-55-amd64"), {}, [], "ebpf_kernel_version"),
    ],
    ids=["wrong-arch", "vermagic-flags", "other-release", "unsigned-enforced", "no-modules", "out-of-range",
         "probe-other-kernel"],
)
def test_does_not_fit(tmp_path, machine, make, machine_state, args, failed_code):
    root = machine(**machine_state)
    result = inspect(root, make(tmp_path), *args)

    assert isinstance(result.exception, VerificationError), result.output
    assert result.exception.exit_code == ExitCode.VERIFICATION
    assert f"FAIL {failed_code}" in result.output
    assert "verdict: does not fit kernel" in result.output
    assert result.exception.hint


def test_signed_module_under_sig_enforce_fits(tmp_path, machine):
    root = machine(sig_enforce=True)
    result = inspect(root, make_kmod(tmp_path, vermagic=VERMAGIC, signed=True))

    assert result.exit_code == 0, result.output
    assert "sig_enforce=Y" in result.output


def test_compressed_module(tmp_path, machine):
    root = machine()
    result = inspect(root, compress_file(make_kmod(tmp_path, vermagic=VERMAGIC), "xz"), "--output", "json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["artifact"]["vermagic"] == VERMAGIC


def test_probe_report(tmp_path, machine):
    root = machine()
    probe = make_bpf_probe(tmp_path, kernel_version=RELEASE, api=(8, 0, 3), schema=(2, 19, 6))
    result = inspect(root, probe, "--driver-version", "8.0.0+driver")

    assert result.exit_code == 0, result.output
    assert "legacy eBPF probe" in result.output
    assert "api version:      8.0.3\n" in result.output
    assert "kernel version:   6.1.0-56-amd64\n" in result.output
    assert "==8.0.0+driver" in result.output  # the legacy probe accepts only its exact version


def test_not_an_artifact(tmp_path, machine):
    root = machine()
    page = tmp_path / "falco.ko"
    page.write_text("<html>404</html>")
    result = inspect(root, page)

    assert isinstance(result.exception, VerificationError)
    assert "not an ELF file" in result.exception.message
    assert result.output == ""


def _run(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FALCOCTL_", "DRIVER"))}
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "falco-driver-loader"), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_exit_status_through_the_real_entry_point(tmp_path):
    page = tmp_path / "falco.ko"
    page.write_text("<html>404</html>")
    bad = _run("inspect", str(page))
    assert bad.returncode == ExitCode.VERIFICATION
    assert "error:" in bad.stderr and "not an ELF file" in bad.stderr
    assert "Traceback" not in bad.stderr

    missing = _run("inspect", str(tmp_path / "absent.ko"))
    assert missing.returncode == ExitCode.USAGE

    wrong_arch = patch_machine(make_kmod(tmp_path), EM_AARCH64)
    result = _run("inspect", str(wrong_arch), "--arch", "x86_64")
    assert result.returncode == ExitCode.VERIFICATION
    assert "FAIL elf_machine" in result.stdout
    assert "does not fit" in result.stderr


def test_probe_for_the_running_kernel_fits_through_the_real_entry_point(tmp_path):
    probe = make_bpf_probe(tmp_path, kernel_version=os.uname().release)
    result = _run("inspect", str(probe), "--output", "json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["fits"] is True


@pytest.mark.parametrize("machine_state", [{"modules": False}, {"sig_enforce": True}],
                         ids=["build-host-without-modules", "build-host-enforcing-signatures"])
def test_a_named_kernel_is_judged_not_the_build_host_running_it(tmp_path, machine, machine_state):
    # --kernel-release names a kernel this machine is not running: the build host's own module support and
    # signature policy say nothing about it, so they must not decide the verdict.
    root = machine(running="5.10.0-99-cloud-amd64", **machine_state)
    result = inspect(root, make_kmod(tmp_path, vermagic=VERMAGIC))

    assert result.exit_code == 0, result.output
    assert "verdict: fits kernel 6.1.0-56-amd64" in result.output
    assert "not the running kernel" in result.output


def test_a_named_kernel_still_fails_on_what_the_files_say(tmp_path, machine):
    root = machine(running="5.10.0-99-cloud-amd64", modules=False)
    result = inspect(root, make_kmod(tmp_path, vermagic=f"{RELEASE} SMP mod_unload "))

    assert isinstance(result.exception, VerificationError), result.output
    assert "FAIL vermagic" in result.output
    assert "FAIL modules_unsupported" not in result.output


def _falco_requires(monkeypatch, api="8.0.0", schema="3.5.0"):
    """A Falco on this host whose `falco --version` says which driver API and schema it requires."""
    from driver_loader.host import version_source

    monkeypatch.setattr(version_source, "_falco_versions", lambda _binary: {
        "default_driver_version": "8.0.0+driver", "driver_api_version": api, "driver_schema_version": schema})


def test_a_module_whose_api_major_falco_refuses_does_not_fit(tmp_path, machine, monkeypatch):
    root = machine()
    _falco_requires(monkeypatch)
    result = inspect(root, make_kmod(tmp_path, vermagic=VERMAGIC, api_version="9.0.3", schema_version="3.5.0"))

    assert isinstance(result.exception, VerificationError), result.output
    assert result.exception.exit_code == ExitCode.VERIFICATION
    assert "api version 9.0.3 does not satisfy Falco's 8.0.0 (same major, minor.patch >=)" in result.output


def test_the_probe_needs_falcos_schema_minor_but_the_module_does_not(tmp_path, machine, monkeypatch):
    root = machine()
    _falco_requires(monkeypatch)
    probe = make_bpf_probe(tmp_path, kernel_version=RELEASE, api=(8, 0, 3), schema=(3, 6, 0))
    refused = inspect(root, probe)
    assert isinstance(refused.exception, VerificationError), refused.output
    assert refused.exception.exit_code == ExitCode.VERIFICATION
    assert "schema version 3.6.0 does not satisfy Falco's 3.5.0 (same major and minor, patch >=)" in refused.output

    module = make_kmod(tmp_path, vermagic=VERMAGIC, api_version="8.0.3", schema_version="3.6.0")
    accepted = inspect(root, module)
    assert accepted.exit_code == 0, accepted.output
    assert "schema version 3.6.0 satisfies 3.5.0" in accepted.output
