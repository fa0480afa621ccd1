"""The container image, built for real (buildah) and run the way the Helm chart runs its init container.

Marker `image`: needs root and buildah (and mmdebstrap where no registry is reachable); a few minutes cold, well
under a minute with the images cached (tests/image_harness.py says how both are cached). Skip with -m 'not image'.

Each run gets a fresh working container of the image and a fake host root (a Debian or an Ubuntu node: etc, boot,
lib/modules, usr with kernel headers and driver sources) mounted where the chart mounts the node's, with the chart's
/root/.falco and /etc/falco/config.d volumes as directories of the test. The node's /proc is the real one: a container
shares the node's kernel. A mirror on 127.0.0.1 records what the loader asks for and serves nothing, so no driver is
ever obtained, let alone loaded, on the machine running the suite.
"""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import threading
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import image_harness as harness
import pytest
from tls_fixtures import make_tls_files

pytestmark = pytest.mark.image

RELEASE = os.uname().release  # the node's kernel: the container runs on it
DRIVER_VERSION = "8.0.0+driver"
# The legacy --kernel-release/--kernel-version flags name another kernel: an AWS Ubuntu one.
OTHER_RELEASE, OTHER_VERSION = "5.15.0-1009-aws", "#9-Ubuntu SMP Wed Jun 1 12:00:00 UTC 2022"
OS_RELEASE = {
    "debian": 'PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nNAME="Debian GNU/Linux"\nVERSION_ID="11"\n'
              'VERSION_CODENAME=bullseye\nID=debian\n',
    "ubuntu": 'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\nVERSION_CODENAME=jammy\n'
              'ID=ubuntu\nID_LIKE=debian\n',
}
DEBIAN_VERSION = {"debian": "11.9\n", "ubuntu": "bookworm/sid\n"}
# What the chart adds for kind auto, and for any other kind (pod-template.tpl).
AUTO_ENV = {"FALCOCTL_DRIVER_CONFIG_NAMESPACE": "falco", "FALCOCTL_DRIVER_CONFIG_CONFIGMAP": "falco"}
FIXED_KIND_ENV = {"FALCOCTL_DRIVER_CONFIG_UPDATE_FALCO": "false"}
ENGINE_FILE = "engine-kind-falcoctl.yaml"


def _skip_loudly(request: pytest.FixtureRequest, reason: str) -> None:
    message = f"IMAGE SUITE SKIPPED: {reason}"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(message, yellow=True, bold=True)
    warnings.warn(message, stacklevel=1)
    pytest.skip(message)


@pytest.fixture(scope="session")
def image(request: pytest.FixtureRequest) -> harness.Image:
    try:
        built = harness.ensure_image()
    except harness.ImageUnavailable as exc:
        _skip_loudly(request, str(exc))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        how = "built" if built.built else "cached"
        reporter.write_line(f"\n[image] {built.ref} ({how}, base {built.base}): {built.size / 1e6:.0f} MB, "
                            f"{built.seconds:.0f} s")
    return built


class Node:
    """A fake node: its / (host root), and the chart's two emptyDir volumes."""

    def __init__(self, base: Path, distro: str):
        self.distro = distro
        self.root = base / f"node-{distro}"
        self.cache = base / "root-falco"
        self.config_d = base / "config.d"
        for path in (self.cache, self.config_d):
            path.mkdir(parents=True)
        etc = self.root / "etc"
        etc.mkdir(parents=True)
        (etc / "os-release").write_text(OS_RELEASE[distro])
        (etc / "debian_version").write_text(DEBIAN_VERSION[distro])
        (self.root / "boot").mkdir()
        (self.root / "boot" / f"config-{RELEASE}").write_text("CONFIG_MODULES=y\n")
        headers = self.root / "usr" / "src" / f"linux-headers-{RELEASE}"
        headers.mkdir(parents=True)
        (headers / "Makefile").write_text("# kernel headers (fake)\n")
        modules = self.root / "lib" / "modules" / RELEASE
        modules.mkdir(parents=True)
        (modules / "build").symlink_to(f"/usr/src/linux-headers-{RELEASE}")  # as Debian and Ubuntu link it
        sources = self.root / "usr" / "src" / f"falco-{DRIVER_VERSION}"
        sources.mkdir()
        (sources / "dkms.conf").write_text(f'PACKAGE_NAME="falco"\nPACKAGE_VERSION="{DRIVER_VERSION}"\n')

    def mounts(self, omit: tuple = ()) -> List[harness.Mount]:
        return harness.chart_mounts(self.root, self.cache, self.config_d, omit=omit)


@pytest.fixture
def container(image):
    with harness.container_root(image) as root:
        yield root


@pytest.fixture(params=["debian", "ubuntu"])
def node(request, tmp_path) -> Node:
    return Node(tmp_path, request.param)


@pytest.fixture
def ubuntu(tmp_path) -> Node:
    return Node(tmp_path, "ubuntu")


class Mirror:
    """Records each request and answers 404; over TLS with a throw-away CA when `tls` is given."""

    def __init__(self, tls=None):
        self.requests: List[str] = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.timeout = 5
        if tls is not None:
            self.server.socket = tls.server_context().wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/driver"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def mirror():
    server = Mirror()
    yield server
    server.close()


@pytest.fixture
def tls_mirror(tmp_path):
    server = Mirror(make_tls_files(tmp_path / "tls"))
    yield server
    server.close()


def run(image, container, node: Node, *args: str, env: Optional[Dict[str, str]] = None, omit: tuple = ()):
    return harness.run_image(image, container, list(args), node.mounts(omit), env=env)


def printenv_lines(stdout: str) -> Dict[str, str]:
    return dict(re.findall(r'^([A-Z_]+)="(.*)"$', stdout, re.MULTILINE))


def modules_supported() -> bool:
    return os.path.exists("/proc/modules")


def modern_ebpf_supported() -> bool:
    from driver_loader.host.modern_ebpf import check_support

    return check_support().supported


# ---------------------------------------------------------------------------------------------- the image itself
def test_image_config_is_the_charts_contract(image):
    env = dict(item.split("=", 1) for item in image.env)
    assert env["HOST_ROOT"] == "/host" and env["HOME"] == "/root"
    assert image.entrypoint == ("falco-driver-loader", "--entrypoint")


def test_image_python_libraries_are_debians(image):
    """Every library the loader imports is Debian's (dist-packages under /usr/lib), and the loader is the only
    thing pip put in the image; pip itself is not there."""
    packages = dict(line.split(" ", 1) for line in harness.installed_packages(image))
    for package in ("python3-requests", "python3-click", "python3-structlog", "python3-packaging",
                    "python3-pyelftools", "python3-yaml", "python3-zstandard", "python3-cryptography", "python3-nacl",
                    "dkms", "gcc", "clang", "llvm"):
        assert package in packages, package
    assert "python3-pip" not in packages and "python3-setuptools" not in packages
    with harness.container_root(image) as root:
        local = sorted(p.name for p in (root / "usr/local/lib/python3.11/dist-packages").iterdir())
        assert [n for n in local if not n.startswith(("driver_loader", "falco_driver_loader"))] == []
        probe = ("import requests, click, structlog, packaging, elftools, yaml, zstandard, cryptography, nacl, "
                 "driver_loader; print(' '.join(m.__file__ for m in (requests, click, structlog, packaging, elftools, "
                 "yaml, zstandard, cryptography, nacl, driver_loader)))")
        proc = subprocess.run(harness.chroot_argv(root, [], ["/usr/bin/python3", "-c", probe]),
                                      capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    files = proc.stdout.split()
    assert all(f.startswith("/usr/lib/python3/dist-packages/") for f in files[:-1]), files
    assert files[-1].startswith("/usr/local/lib/python3.11/dist-packages/driver_loader/"), files[-1]


# ---------------------------------------------------------------------------------------------- printenv
def test_print_env_names_the_nodes_distro_and_kernel(image, container, node):
    result = run(image, container, node, "--print-env")
    assert result.returncode == 0, result.stderr
    env = printenv_lines(result.stdout)
    assert env["HOST_ROOT"] == "/host"
    assert env["KERNEL_RELEASE"] == RELEASE
    assert env["DRIVER_VERSION"] == DRIVER_VERSION  # from the node's /usr/src, through the image's links
    # The node's distro, not the image's (Debian 12): Ubuntu's target, or Debian's.
    assert env["TARGET_ID"].split("-")[0] == node.distro, env["TARGET_ID"]


def test_kernel_release_and_version_flags_name_another_kernel(image, container, ubuntu):
    result = run(image, container, ubuntu, "--print-env", "--kernel-release", OTHER_RELEASE,
                 "--kernel-version", OTHER_VERSION)
    assert result.returncode == 0, result.stderr
    env = printenv_lines(result.stdout)
    assert (env["TARGET_ID"], env["KERNEL_RELEASE"], env["KERNEL_VERSION"], env["FIXED_KERNEL_VERSION"]) == \
        ("ubuntu-aws", OTHER_RELEASE, OTHER_VERSION, "9")


def test_usr_src_links_point_at_the_nodes_sources(image, container, ubuntu):
    result = run(image, container, ubuntu, "--print-env")
    assert result.returncode == 0, result.stderr
    for name in (f"falco-{DRIVER_VERSION}", f"linux-headers-{RELEASE}"):
        link = container / "usr" / "src" / name
        assert link.is_symlink() and os.readlink(link) == f"/host/usr/src/{name}", name


# ---------------------------------------------------------------------------------------------- doctor
@pytest.mark.parametrize("missing, flag", [("/host/etc", "-v /etc:/host/etc:ro"),
                                           ("/host/lib/modules", "-v /lib/modules:/host/lib/modules"),
                                           ("/host/usr", "-v /usr:/host/usr:ro"),
                                           ("/host/boot", "-v /boot:/host/boot:ro")])
def test_doctor_names_a_missing_mount_by_its_flag(image, container, ubuntu, missing, flag):
    result = run(image, container, ubuntu, "doctor", omit=(missing,))
    output = result.stdout + result.stderr
    assert flag in output, output
    others = [f for m, f in (("/host/etc", "-v /etc:"), ("/host/usr", "-v /usr:"), ("/host/boot", "-v /boot:"))
              if m != missing]
    assert not [f for f in others if f in output], output


# ---------------------------------------------------------------------------------------------- the chart's kinds
def test_kind_kmod_with_download_asks_the_mirror_for_the_nodes_module(image, container, ubuntu, mirror):
    result = run(image, container, ubuntu, "--download", "--http-retries=0", "--no-version-fallback",
                 "--kernel-release", OTHER_RELEASE, "--kernel-version", OTHER_VERSION, "kmod",
                 env={"FALCOCTL_DRIVER_REPOS": mirror.url, **FIXED_KIND_ENV})
    output = result.stdout + result.stderr
    if not modules_supported():
        # This kernel cannot load modules: kmod is refused as an unsupported host, before any download.
        assert result.returncode == 6, output
        assert "/proc/modules" in output and not mirror.requests
        return
    assert result.returncode == 3, output  # the mirror has nothing: no driver
    assert any(r.endswith(f"/falco_ubuntu-aws_{OTHER_RELEASE}_9.ko") for r in mirror.requests), mirror.requests
    assert "dkms" not in output.lower()  # --download: no local build
    assert not list(ubuntu.config_d.iterdir())


def test_kind_kmod_with_compile_builds_only(image, container, ubuntu, mirror):
    result = run(image, container, ubuntu, "--compile", "kmod",
                 env={"FALCOCTL_DRIVER_REPOS": mirror.url, **FIXED_KIND_ENV})
    output = result.stdout + result.stderr
    assert not mirror.requests  # --compile: nothing downloaded
    if not modules_supported():
        assert result.returncode == 6, output
        return
    assert result.returncode == 3, output  # fake headers: the build fails, and says so
    assert re.search(r"build|dkms", output, re.IGNORECASE), output


def test_legacy_probe_download_and_compile(image, container, ubuntu, mirror):
    """The image's legacy `ebpf` kind on any kernel: --download asks the mirror for the node's probe, --compile
    asks nothing and tries clang."""
    common = ["--http-retries=0", "--no-version-fallback", "--kernel-release", OTHER_RELEASE,
              "--kernel-version", OTHER_VERSION]
    result = run(image, container, ubuntu, "--download", *common, "ebpf", env={"FALCOCTL_DRIVER_REPOS": mirror.url})
    assert result.returncode == 3, result.stderr
    assert any(r.endswith(f"/falco_ubuntu-aws_{OTHER_RELEASE}_9.o") for r in mirror.requests), mirror.requests
    asked = len(mirror.requests)
    result = run(image, container, ubuntu, "--compile", *common, "ebpf", env={"FALCOCTL_DRIVER_REPOS": mirror.url})
    assert result.returncode != 0, result.stdout
    assert len(mirror.requests) == asked


def test_http_insecure(image, container, ubuntu, tls_mirror):
    """An HTTPS mirror with a certificate the image does not trust: refused; with --http-insecure, asked."""
    args = ["--download", "--http-retries=0", "--no-version-fallback", "--kernel-release", OTHER_RELEASE,
            "--kernel-version", OTHER_VERSION, "ebpf"]
    env = {"FALCOCTL_DRIVER_REPOS": tls_mirror.url}
    refused = run(image, container, ubuntu, *args, env=env)
    assert refused.returncode == 1 and "TLS verification failed" in refused.stderr, refused.stderr
    assert not tls_mirror.requests
    insecure = run(image, container, ubuntu, "--http-insecure", *args, env=env)
    assert insecure.returncode == 3, insecure.stderr
    assert any(r.endswith(f"_{OTHER_RELEASE}_9.o") for r in tls_mirror.requests), tls_mirror.requests


def test_kind_modern_ebpf_writes_nothing_for_a_fixed_kind(image, container, ubuntu, mirror):
    if not modern_ebpf_supported():
        pytest.skip("this kernel does not support modern_ebpf")
    result = run(image, container, ubuntu, "modern_ebpf", env={"FALCOCTL_DRIVER_REPOS": mirror.url,
                                                              **FIXED_KIND_ENV})
    assert result.returncode == 0, result.stderr
    assert not mirror.requests and not list(ubuntu.config_d.iterdir())


def test_kind_auto_on_a_modern_ebpf_kernel_tells_falco_through_config_d(image, container, node, mirror):
    if not modern_ebpf_supported():
        pytest.skip("this kernel does not support modern_ebpf")
    result = run(image, container, node, "--log-format=json", "auto",
                 env={"FALCOCTL_DRIVER_REPOS": mirror.url, **AUTO_ENV})
    assert result.returncode == 0, result.stderr
    engine = node.config_d / ENGINE_FILE
    assert engine.exists(), list(node.config_d.iterdir())
    assert re.search(r"kind:\s*modern_ebpf", engine.read_text()), engine.read_text()
    assert not mirror.requests  # modern_ebpf needs no artifact


def test_clean_removes_what_install_wrote(image, container, node, mirror):
    if not modern_ebpf_supported():
        pytest.skip("this kernel does not support modern_ebpf")
    env = {"FALCOCTL_DRIVER_REPOS": mirror.url, **AUTO_ENV}
    assert run(image, container, node, "auto", env=env).returncode == 0
    assert (node.config_d / ENGINE_FILE).exists()
    result = run(image, container, node, "--clean", env=env)
    assert result.returncode == 0, result.stderr
    assert not (node.config_d / ENGINE_FILE).exists()
