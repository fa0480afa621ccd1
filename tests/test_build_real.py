"""Real builds through build_artifact: Debian's falcosecurity-scap-dkms sources (module `scap`) against the
headers of linux-headers-amd64, a kernel other than the one running. Needs root, dkms, those two packages, and
clang/llvm for the probe; .ci/apt-packages lists them."""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from driver_loader.artifacts.elf import inspect_artifact, read_artifact
from driver_loader.build.local_build import BuildResult, build_artifact, remove_dkms_state
from driver_loader.core.distros.base import HostFacts
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import LoaderError
from driver_loader.core.plan import DriverRequirement, make_plan
from driver_loader.core.settings import Settings

pytestmark = pytest.mark.realbuild

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = "scap"
UNAME_V = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.0-1 (2025-01-01)"
LOCK_FILE = os.path.join(tempfile.gettempdir(), "falco-driver-loader-realbuild.lock")


def _installed_version(package: str) -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}|${Version}|${Depends}", package],
                            capture_output=True, text=True)
    status, _, rest = result.stdout.partition("|")
    return rest if result.returncode == 0 and status == "install ok installed" else ""


def _headers_release() -> str:
    """The release linux-headers-amd64 points at, e.g. linux-headers-6.1.0-56-amd64 -> 6.1.0-56-amd64."""
    match = re.search(r"linux-headers-(\d[^ ,]*)", _installed_version("linux-headers-amd64"))
    return match.group(1) if match else ""


def _scap_version() -> str:
    """The sources' version: the package version without its Debian revision."""
    version = _installed_version("falcosecurity-scap-dkms").split("|")[0]
    return version.rsplit("-", 1)[0] if version else ""


@pytest.fixture(scope="module")
def real_host():
    """(headers release, scap version), holding a host-wide lock: DKMS state is global, and several test runs
    on one machine must not remove and build the same module at the same time."""
    if os.geteuid() != 0:
        pytest.skip("DKMS builds need root")
    if shutil.which("dkms") is None:
        pytest.skip("dkms is not installed (apt-get install dkms)")
    release, version = _headers_release(), _scap_version()
    if not version or not os.path.isdir(f"/usr/src/{DRIVER}-{version}"):
        pytest.skip("the falcosecurity-scap-dkms package is not installed")
    if not release or not os.path.isdir(f"/lib/modules/{release}/build"):
        pytest.skip("the linux-headers-amd64 package is not installed")
    with open(LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield release, version


def _build(plan, settings) -> BuildResult:
    """build_artifact, with the build log tail in the failure report when it fails."""
    try:
        return build_artifact(plan, settings)
    except LoaderError as error:
        pytest.fail("\n".join([error.message, *error.tried, error.hint]))


def _plan(release: str, version: str, cache_dir: str, driver_type: DriverType):
    settings = Settings(driver_name=DRIVER, cache_dir=cache_dir, build_timeout=900.0)
    facts = HostFacts(release, UNAME_V, "x86_64", {"ID": "debian", "VERSION_ID": "12"}, True)
    return make_plan(facts, settings, driver_type, DriverRequirement(version, "test")), settings


def test_dkms_builds_the_scap_module_for_the_headers_release(real_host, tmp_path):
    release, version = real_host
    # Installing the package already built it for this kernel; start from nothing so that DKMS really builds.
    remove_dkms_state(DRIVER)
    assert not glob.glob(f"/var/lib/dkms/{DRIVER}/{version}/{release}")
    plan, settings = _plan(release, version, str(tmp_path / "cache"), DriverType.KMOD)

    result = _build(plan, settings)

    assert result.path == plan.candidates[0].cache_path
    assert result.verified_by == "local-build"
    assert result.log_path is not None and os.path.isfile(result.log_path)
    info = inspect_artifact(read_artifact(result.path))
    assert info.kind == "kmod"
    assert info.name == DRIVER
    assert info.driver_version == version
    assert info.vermagic.split(" ", 1)[0] == release
    assert build_artifact(plan, settings, runner=None).sha256 == result.sha256


def test_make_builds_the_legacy_probe_for_the_headers_release(real_host, tmp_path):
    if shutil.which("clang") is None or shutil.which("llc") is None:
        pytest.skip("clang and llvm are needed for the eBPF probe")
    release, version = real_host
    plan, settings = _plan(release, version, str(tmp_path / "cache"), DriverType.EBPF)

    result = _build(plan, settings)

    info = inspect_artifact(read_artifact(result.path))
    assert info.kind == "ebpf"
    assert info.driver_version == version
    assert info.kernel_version == release
    assert not os.path.exists(f"/usr/src/{DRIVER}-{version}/bpf/probe.o")


def test_the_build_command_bakes_the_module_into_the_cache(real_host, tmp_path):
    release, version = real_host
    cache_dir = tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "falco-driver-loader"), "build", "--type", "kmod",
         "--name", DRIVER, "--driver-version", version, "--kernel-release", release, "--kernel-version", UNAME_V,
         "--cache-dir", str(cache_dir), "--output", "json"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    assert built["path"].startswith(str(cache_dir) + "/") and built["verified_by"] == "local-build"
    info = inspect_artifact(read_artifact(built["path"]))
    assert (info.name, info.driver_version, info.vermagic.split(" ", 1)[0]) == (DRIVER, version, release)
