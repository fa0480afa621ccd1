"""`doctor`: each check's verdict on fake nodes (a host root, fake /proc and /sys, file:// and 127.0.0.1
repositories), the exit status install would end with, and a run on this very machine."""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import pytest
from cli_settings import settings_for

from driver_loader.cli.commands import _options, doctor
from driver_loader.cli.commands.doctor import FAIL, PASS, SKIP, WARN, evaluate, nearest_releases, observe, render_text
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import ExitCode
from driver_loader.core.policy import (
    CachedArtifact,
    ChecksumRecord,
    Evidence,
    Observations,
    VerifyPolicy,
    acquisition_steps,
)
from driver_loader.host.modern_ebpf import ModernEbpfSupport
from driver_loader.kernel.modules import KernelModules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UBUNTU = 'ID=ubuntu\nVERSION_ID="22.04"\nPRETTY_NAME="Ubuntu 22.04.3 LTS"\n'
KREL, KVER = "5.15.0-1009-aws", "#9-Ubuntu SMP Thu May 12 10:33:41 UTC 2022"
VERSION = "8.0.0+driver"
FILENAME = f"falco_ubuntu-aws_{KREL}_9.ko"
MODERN_OK = ModernEbpfSupport(True, True, True, True, "BTF present and BPF ring buffer available")
MODERN_NO = ModernEbpfSupport(False, False, None, True, "no kernel BTF at /sys/kernel/btf/vmlinux")


@pytest.fixture
def node(tmp_path, host_root, monkeypatch):
    """A fake node: call it with options to get (checks by name, verdict)."""
    root = host_root({"etc/os-release": UBUNTU, "boot/config-" + KREL: "CONFIG_MODULES=y\n",
                      f"lib/modules/{KREL}/modules.dep": "", "usr/src/.keep": ""})
    proc = tmp_path / "proc"
    proc.mkdir()
    sys_root = tmp_path / "sys"
    (sys_root / "module").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no falco, no build tools unless a test adds them
    monkeypatch.setattr(_options, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.yaml"))
    state = {"root": root, "proc": proc, "sys": sys_root, "bin": bin_dir, "euid": 0, "modern": MODERN_NO}

    def run(*options, modules=True, types=("--type", "kmod"), version=("--driver-version", VERSION)):
        if modules:
            (proc / "modules").write_text("")
        _, settings = settings_for(["doctor", "--host-root", root, "--kernel-release", KREL, "--kernel-version", KVER,
                                    "--arch", "amd64", "--cache-dir", str(tmp_path / "cache"), *types, *version,
                                    *options], {})
        kernel = KernelModules(sys_root=str(sys_root), proc_root=str(proc), euid=lambda: state["euid"])
        observations = observe(settings, kernel=kernel, modern_support=lambda: state["modern"])
        checks, verdict = evaluate(observations)
        return {c.name: c for c in checks}, verdict

    run.state = state
    return run


def tools(node, *names):
    for name in names:
        path = node.state["bin"] / name
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)


def file_repo(tmp_path, versions=(VERSION,), filename=FILENAME):
    repo = tmp_path / "repo"
    for version in versions:
        (repo / version / "x86_64").mkdir(parents=True, exist_ok=True)
        (repo / version / "x86_64" / filename).write_bytes(b"\x7fELF not really")
    repo.mkdir(exist_ok=True)
    return f"file://{repo}"


def test_modern_ebpf_needs_nothing_more(node):
    node.state["modern"] = MODERN_OK
    checks, verdict = node(types=())
    assert verdict.exit_code == ExitCode.OK
    assert checks["driver type"].status == PASS and "modern_ebpf" in checks["driver type"].summary
    assert checks["modern_ebpf"].status == PASS
    assert {checks[n].status for n in ("cache", "repositories", "prebuilt", "build")} == {SKIP}


def test_no_module_support_and_no_btf_is_an_unsupported_host(node):
    checks, verdict = node(modules=False, types=())
    assert verdict.exit_code == ExitCode.UNSUPPORTED_HOST
    assert checks["modules"].status == WARN
    assert checks["modern_ebpf"].status == WARN
    assert checks["driver type"].status == FAIL
    assert "modern_ebpf" in checks["driver type"].summary and "kmod" in checks["driver type"].summary


def test_kmod_without_module_support_points_at_modern_ebpf(node):
    node.state["modern"] = MODERN_OK
    checks, verdict = node(modules=False)
    assert verdict.exit_code == ExitCode.UNSUPPORTED_HOST
    assert "modern_ebpf" in checks["modules"].advice
    assert "modern_ebpf" in checks["driver type"].advice


def test_host_facts_and_mounts(node):
    checks, _ = node("--no-download", "--no-compile")
    assert checks["host"].status == PASS
    assert f"kernel {KREL}" in checks["host"].summary and "target ubuntu-aws" in checks["host"].summary
    assert "Ubuntu 22.04.3 LTS" in checks["host"].summary
    assert checks["host root"].status == PASS


def test_missing_host_mounts_are_named_with_the_mount_to_add(node):
    os.remove(os.path.join(node.state["root"], "etc/os-release"))
    checks, _ = node("--no-download", "--no-compile")
    assert checks["host root"].status == WARN
    assert "no host /etc" in checks["host root"].summary
    assert f"-v /etc:{node.state['root']}/etc:ro" in checks["host root"].advice
    assert checks["host"].status == WARN  # without os-release the target is undetermined


def test_a_loaded_compatible_module_is_kept(node):
    module = node.state["sys"] / "module" / "falco"
    module.mkdir()
    (module / "version").write_text("8.1.0+driver\n")
    (module / "initstate").write_text("live\n")
    node.state["euid"] = 1000  # keeping it needs no root
    checks, verdict = node("--no-download", "--no-compile")
    assert verdict.exit_code == ExitCode.OK
    assert checks["loaded module"].status == PASS and "keep" in checks["loaded module"].summary
    assert checks["privileges"].status == SKIP


def test_a_loaded_incompatible_module_will_be_replaced(node, tmp_path):
    module = node.state["sys"] / "module" / "falco"
    module.mkdir()
    (module / "version").write_text("7.0.0+driver\n")
    checks, verdict = node("--repo", file_repo(tmp_path), "--no-compile")
    assert checks["loaded module"].status == WARN
    assert "replace" in checks["loaded module"].summary
    assert verdict.exit_code == ExitCode.OK


def test_not_root_cannot_load_a_module(node, tmp_path):
    node.state["euid"] = 1000
    checks, verdict = node("--repo", file_repo(tmp_path))
    assert checks["privileges"].status == FAIL
    assert verdict.exit_code == ExitCode.RUNTIME


def test_prebuilt_in_a_file_repository(node, tmp_path):
    checks, verdict = node("--repo", file_repo(tmp_path), "--no-compile")
    assert checks["repositories"].status == PASS
    assert checks["prebuilt"].status == PASS and FILENAME in checks["prebuilt"].summary
    assert verdict.exit_code == ExitCode.OK
    assert "downloading" in verdict.message


def _cache(tmp_path, verified_by):
    from driver_loader.artifacts.cache import ArtifactCache

    made = tmp_path / "made.ko"
    made.write_bytes(b"cached")
    return ArtifactCache(str(tmp_path / "cache")).store_file(f"{VERSION}/x86_64/{FILENAME}", str(made),
                                                             verified_by=verified_by)


def test_cached_artifact_is_enough(node, tmp_path):
    cached = _cache(tmp_path, "sha256-sidecar")
    checks, verdict = node("--no-download", "--no-compile")
    assert checks["cache"].status == PASS and cached.path in checks["cache"].summary
    assert verdict.exit_code == ExitCode.OK


def test_a_file_the_cache_does_not_vouch_for_is_not_counted(node, tmp_path):
    # No metadata beside it: install never uses it, so doctor must not promise it.
    stray = tmp_path / "cache" / VERSION / "x86_64" / FILENAME
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"cached")
    _, verdict = node("--no-download", "--no-compile")
    assert verdict.exit_code == ExitCode.NO_DRIVER


@pytest.mark.parametrize(("options", "verified_by"), [
    (("--verify", "strict"), "none (recorded digest)"),
    (("--sha256", "0" * 64), "sha256-sidecar"),
])
def test_doctor_refuses_the_cache_entries_install_refuses(node, tmp_path, options, verified_by):
    cached = _cache(tmp_path, verified_by)
    checks, verdict = node("--no-download", "--no-compile", *options)
    assert checks["cache"].status == WARN and cached.path in checks["cache"].summary
    assert "will not use it" in checks["cache"].summary
    assert verdict.exit_code == ExitCode.VERIFICATION  # what install exits with on the same node


def test_nothing_anywhere_is_no_driver(node, tmp_path):
    checks, verdict = node("--repo", file_repo(tmp_path, versions=()), "--no-compile")
    assert checks["prebuilt"].status == WARN
    assert verdict.exit_code == ExitCode.NO_DRIVER


def test_download_and_compile_off_is_no_driver(node):
    _, verdict = node("--no-download", "--no-compile")
    assert verdict.exit_code == ExitCode.NO_DRIVER


def test_a_missing_file_repository_fails_its_check(node, tmp_path):
    checks, verdict = node("--repo", f"file://{tmp_path}/nowhere", "--no-compile")
    assert checks["repositories"].status == FAIL
    assert "does not exist" in checks["repositories"].summary
    assert "must be an existing directory" in checks["repositories"].advice
    assert verdict.exit_code == ExitCode.NO_DRIVER  # every candidate is simply absent there, as install finds


def test_compatible_version_fallback_from_the_site_index(node, tmp_path):
    repo = file_repo(tmp_path, versions=("8.2.0+driver", "9.0.0+driver"))
    (tmp_path / "repo" / "site").mkdir()
    (tmp_path / "repo" / "site" / "index.json").write_text(json.dumps(["9.0.0+driver", "8.2.0+driver", VERSION]))
    checks, verdict = node("--repo", repo, "--no-compile")
    assert checks["prebuilt"].status == PASS
    assert "8.2.0%2Bdriver" in checks["prebuilt"].summary and "compatible version 8.2.0+driver" in checks[
        "prebuilt"].summary
    assert verdict.exit_code == ExitCode.OK
    _, verdict = node("--repo", repo, "--no-compile", "--no-version-fallback")
    assert verdict.exit_code == ExitCode.NO_DRIVER


def test_nearest_kernels_from_the_site_index(node, tmp_path):
    repo = file_repo(tmp_path, versions=())
    site = tmp_path / "repo" / "site"
    site.mkdir()
    (site / "index.json").write_text(json.dumps([VERSION]))
    (site / f"{VERSION}.json").write_text(json.dumps({"drivers": [
        {"arch": "x86_64", "name": "falco_ubuntu-aws_5.15.0-1008-aws_8.ko"},
        {"arch": "x86_64", "name": "falco_ubuntu-aws_5.15.0-1011-aws_11.ko"},
        {"arch": "aarch64", "name": "falco_ubuntu-aws_5.15.0-1009-aws_9.ko"},
        {"arch": "x86_64", "name": "falco_debian_5.15.0-1009-aws_1.ko"},
        {"arch": "x86_64", "name": "falco_ubuntu-aws_4.4.0-1000-aws_1.ko"},
    ]}))
    checks, verdict = node("--repo", repo, "--no-compile")
    assert checks["prebuilt"].status == WARN
    assert "5.15.0-1008-aws, 5.15.0-1011-aws, 4.4.0-1000-aws" in checks["prebuilt"].advice
    assert verdict.exit_code == ExitCode.NO_DRIVER


@pytest.mark.parametrize("filenames, expected", [
    ({"falco_t_5.15.0-1_1.ko", "falco_t_5.15.1-1_1.ko", "falco_t_6.1.0-1_1.ko"}, ("5.15.0-1", "5.15.1-1", "6.1.0-1")),
    ({"falco_t_5.15.0-2_1.ko", "falco_t_5.15.0-2_1.o", "falco_x_5.15.0-2_1.ko"}, ("5.15.0-2",)),
    ({"falco_t_5.15.0-3_1.ko"}, ()),  # the release itself is not "nearest"
    (set(), ()),
])
def test_nearest_releases(filenames, expected):
    assert nearest_releases("5.15.0-3", filenames, "falco_t_", ".ko") == expected


def test_http_repository_on_loopback(node, httpserver):
    httpserver.expect_request("/d/").respond_with_data("", status=403)
    httpserver.expect_request(f"/d/{VERSION}/x86_64/{FILENAME}").respond_with_data("", status=404)
    checks, verdict = node("--repo", httpserver.url_for("/d"), "--no-compile", "--no-version-fallback")
    assert checks["repositories"].status == PASS and "answered HTTP 403" in checks["repositories"].summary
    assert checks["prebuilt"].status == WARN
    assert verdict.exit_code == ExitCode.NO_DRIVER


def test_http_artifact_on_loopback(node, httpserver):
    httpserver.expect_request("/d/").respond_with_data("ok")
    httpserver.expect_request(f"/d/{VERSION}/x86_64/{FILENAME}").respond_with_data(b"\x7fELF")
    checks, verdict = node("--repo", httpserver.url_for("/d"), "--no-compile")
    assert checks["prebuilt"].status == PASS
    assert verdict.exit_code == ExitCode.OK


def closed_loopback_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the socket is closed


def test_unreachable_repository_leaves_the_question_open(node):
    url = f"http://127.0.0.1:{closed_loopback_port()}/d"
    checks, verdict = node("--repo", url, "--no-compile", "--http-retries", "0")
    assert checks["repositories"].status == FAIL
    assert "check the network path" in checks["repositories"].advice
    assert verdict.exit_code == ExitCode.RUNTIME


def test_missing_ca_bundle_fails_the_repositories_check(node, tmp_path):
    checks, verdict = node("--repo", "https://127.0.0.1:1/d", "--ca-bundle", str(tmp_path / "none.pem"),
                           "--no-compile")
    assert checks["repositories"].status == FAIL and "CA bundle" in checks["repositories"].summary
    assert verdict.exit_code == ExitCode.USAGE


def test_a_possible_build_is_enough(node, tmp_path):
    tools(node, "dkms", "make", "gcc")
    os.makedirs(os.path.join(node.state["root"], f"lib/modules/{KREL}/build"))
    os.makedirs(os.path.join(node.state["root"], f"usr/src/falco-{VERSION}"))
    checks, verdict = node("--no-download")
    assert checks["build"].status == PASS
    assert verdict.exit_code == ExitCode.OK and "build" in verdict.message


def test_a_build_without_headers_says_which_package(node):
    tools(node, "dkms", "make")
    os.makedirs(os.path.join(node.state["root"], f"usr/src/falco-{VERSION}"))
    checks, verdict = node("--no-download")
    assert checks["build"].status == WARN
    assert f"kernel headers for {KREL} are not installed" in checks["build"].summary
    assert "gcc not in PATH" in checks["build"].summary
    assert f"apt-get install linux-headers-{KREL}" in checks["build"].advice
    assert verdict.exit_code == ExitCode.NO_DRIVER


def test_no_driver_version(node):
    checks, verdict = node(version=())
    assert checks["driver version"].status == FAIL
    assert verdict.exit_code == ExitCode.USAGE


def test_signature_enforcement_is_a_warning_for_kmod(node, tmp_path):
    params = node.state["sys"] / "module" / "module" / "parameters"
    params.mkdir(parents=True)
    (params / "sig_enforce").write_text("Y\n")
    checks, verdict = node("--repo", file_repo(tmp_path), "--no-compile")
    assert checks["signatures"].status == WARN
    assert "MOK" in checks["signatures"].advice
    assert verdict.exit_code == ExitCode.OK


def test_text_rendering(node):
    checks, verdict = node("--no-download", "--no-compile")
    text = render_text(list(checks.values()), verdict)
    lines = text.splitlines()
    assert lines[0].startswith("pass  host ")
    assert lines[-2] == f"FAIL: {verdict.message} (exit 3)"
    assert lines[-1] == "  next: allow --download or --compile, or use --type modern_ebpf"


def test_verdict_follows_the_observations(node, tmp_path):
    """The same observations, changed one fact at a time."""
    node("--no-download")  # lays /proc/modules down
    _, settings = settings_for(["doctor", "--host-root", node.state["root"], "--kernel-release", KREL,
                                "--kernel-version", KVER, "--arch", "amd64", "--type", "kmod", "--driver-version",
                                VERSION, "--repo", file_repo(tmp_path), "--cache-dir", str(tmp_path / "cache")], {})
    base = observe(settings, kernel=KernelModules(sys_root=str(node.state["sys"]), proc_root=str(node.state["proc"]),
                                                  euid=lambda: 0),
                   modern_support=lambda: MODERN_NO)
    assert evaluate(base)[1].exit_code == ExitCode.OK
    no_artifact = dataclasses.replace(base, artifacts=())
    assert evaluate(no_artifact)[1].exit_code == ExitCode.NO_DRIVER
    with_cache = acquisition_steps(
        DriverType.KMOD, Observations(cached=(CachedArtifact("/c/x.ko", ChecksumRecord("a" * 64, Evidence.SUMS)),)),
        policy=VerifyPolicy.AUTO, download=False, compile=False, version_fallback=False)
    assert evaluate(dataclasses.replace(no_artifact, acquisition=with_cache))[1].exit_code == ExitCode.OK
    assert evaluate(dataclasses.replace(base, is_root=False))[1].exit_code == ExitCode.RUNTIME
    unreachable = dataclasses.replace(no_artifact, repos=(doctor.RepoProbe("https://x", False, "refused"),),
                                      artifacts=(doctor.ArtifactProbe("https://x/a.ko", "error", "refused", VERSION),))
    assert evaluate(unreachable)[1].exit_code == ExitCode.RUNTIME


def test_doctor_command_exit_status(node, tmp_path, monkeypatch, capsys):
    from driver_loader.cli.main import main
    from driver_loader.host import modern_ebpf
    from driver_loader.kernel import modules as kmod

    node("--no-download")  # lays /proc/modules down
    monkeypatch.setattr(kmod, "KernelModules",
                        lambda: KernelModules(sys_root=str(node.state["sys"]), proc_root=str(node.state["proc"]),
                                              euid=lambda: 0))
    monkeypatch.setattr(modern_ebpf, "check_support", lambda: MODERN_NO)
    args = ["doctor", "--host-root", node.state["root"], "--kernel-release", KREL, "--kernel-version", KVER,
            "--arch", "amd64", "--type", "kmod", "--driver-version", VERSION, "--cache-dir", str(tmp_path / "c"),
            "--output", "json"]
    with pytest.raises(SystemExit) as exited:
        main(args + ["--no-download", "--no-compile"])
    assert exited.value.code == ExitCode.NO_DRIVER
    doc = json.loads(capsys.readouterr().out)
    assert {k: doc["verdict"][k] for k in ("ok", "exit_code")} == {"ok": False, "exit_code": 3}
    assert "no kmod is cached, downloadable or buildable" in doc["verdict"]["message"]
    assert [c["name"] for c in doc["checks"]][:3] == ["host", "host root", "modules"]
    assert all(set(c) == {"name", "status", "summary", "advice"} for c in doc["checks"])

    main(args + ["--repo", file_repo(tmp_path), "--no-compile"])
    assert json.loads(capsys.readouterr().out)["verdict"]["ok"] is True


def test_doctor_on_this_machine():
    """The real host, nothing faked: a full report whose exit status is its verdict's. The driver version is given
    so the answer does not depend on Falco being installed; nothing here needs the network (modern_ebpf needs no
    download, and kmod is probed against an unreachable loopback repository)."""
    from driver_loader.host.modern_ebpf import check_support

    env = {k: v for k, v in os.environ.items() if not k.startswith(("FALCOCTL_", "DRIVER", "HOST_ROOT"))}
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "falco-driver-loader"), "doctor", "--output", "json",
         "--driver-version", VERSION, "--repo", f"http://127.0.0.1:{closed_loopback_port()}/d",
         "--http-retries", "0"],
        capture_output=True, text=True, env=env, timeout=120)
    doc = json.loads(result.stdout)
    assert result.returncode == doc["verdict"]["exit_code"]
    names = [c["name"] for c in doc["checks"]]
    assert names == ["host", "host root", "modules", "signatures", "modern_ebpf", "driver type", "driver version",
                     "probe reader", "artifact signatures", "loaded module", "privileges", "cache", "repositories", "prebuilt", "build"]
    assert {c["status"] for c in doc["checks"]} <= {PASS, WARN, FAIL, SKIP}
    if check_support().supported:
        assert result.returncode == 0
        assert {"name": "driver type", "status": PASS, "summary": "modern_ebpf (requested modern_ebpf,kmod)",
                "advice": ""} in doc["checks"]


def test_strict_with_a_repository_publishing_no_checksum_is_not_a_success(node, tmp_path):
    repo = file_repo(tmp_path)
    checks, verdict = node("--repo", repo, "--no-compile", "--verify", "strict")
    assert checks["prebuilt"].status == WARN and "--verify strict" in checks["prebuilt"].summary
    assert verdict.exit_code == ExitCode.VERIFICATION  # install exits 4 there too
    checks, verdict = node("--repo", repo, "--no-compile")
    assert checks["prebuilt"].status == PASS and verdict.exit_code == ExitCode.OK


def fake_falco(node, libs_version):
    """A `falco` on the node's PATH whose `--version -o json_output=true` reports `libs_version`."""
    answer = json.dumps({"default_driver_version": VERSION, "driver_api_version": "8.0.0",
                         "driver_schema_version": "3.5.0", "libs_version": libs_version})
    path = node.state["bin"] / "falco"
    path.write_text(f"#!/bin/sh\necho '{answer}'\n")
    path.chmod(0o755)


@pytest.mark.parametrize("libs, status", [("0.20.0", WARN), ("0.21.3", WARN), ("0.22.0", PASS), ("0.23.1", PASS),
                                          ("master", SKIP)])
def test_the_legacy_probe_warns_about_falco_libs_that_map_perf_buffers_twice(node, libs, status):
    fake_falco(node, libs)
    checks, _ = node(types=("--type", "ebpf"))
    check = checks["probe reader"]
    assert check.status == status, check
    if status == WARN:
        assert "CVE-2025-38563" in check.summary and libs in check.summary and KREL in check.summary
        assert "modern_ebpf" in check.advice and "0.22.0" in check.advice


def test_the_probe_reader_check_is_only_about_the_legacy_probe(node):
    fake_falco(node, "0.20.0")
    checks, _ = node()
    assert checks["probe reader"].status == SKIP


def test_no_falco_leaves_the_probe_reader_unknown(node):
    checks, _ = node(types=("--type", "ebpf"))
    assert checks["probe reader"].status == SKIP and "unknown" in checks["probe reader"].summary


@pytest.fixture(scope="module")
def public_key(tmp_path_factory):
    directory = tmp_path_factory.mktemp("key")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                    "k.pem"], cwd=directory, check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "pkey", "-in", "k.pem", "-pubout", "-out", "k.pub"], cwd=directory, check=True,
                   capture_output=True, timeout=60)
    return directory / "k.pub"


def test_without_a_key_doctor_says_signatures_are_not_checked(node, tmp_path):
    checks, _ = node("--repo", file_repo(tmp_path), "--no-compile")
    check = checks["artifact signatures"]
    assert check.status == SKIP and "neither required nor checked" in check.summary and "--verify-key" in check.advice


def test_with_a_key_a_prebuilt_without_a_signature_beside_it_would_be_refused(node, tmp_path, public_key):
    checks, verdict = node("--repo", file_repo(tmp_path), "--no-compile", "--verify-key", str(public_key))
    assert checks["artifact signatures"].status == PASS and str(public_key) in checks["artifact signatures"].summary
    assert checks["prebuilt"].status == WARN and "no signature is published" in checks["prebuilt"].summary
    assert verdict.exit_code == ExitCode.VERIFICATION and "no signature beside it" in verdict.message
    # With a signature published beside it, install would go on to download it and check the signature.
    (tmp_path / "repo" / VERSION / "x86_64" / f"{FILENAME}.sig").write_text("MEUCIQ==\n")
    checks, verdict = node("--repo", file_repo(tmp_path), "--no-compile", "--verify-key", str(public_key))
    assert checks["prebuilt"].status == PASS and verdict.exit_code == ExitCode.OK


def test_an_unusable_key_is_what_install_would_fail_on(node, tmp_path):
    bad = tmp_path / "not-a-key.pub"
    bad.write_text("hello\n")
    checks, verdict = node("--repo", file_repo(tmp_path), "--verify-key", str(bad))
    assert checks["artifact signatures"].status == FAIL and str(bad) in checks["artifact signatures"].summary
    assert verdict.exit_code == ExitCode.USAGE


def test_a_cached_entry_without_the_required_signature_is_not_counted(node, tmp_path, public_key):
    _cache(tmp_path, "sha256-sidecar")
    checks, verdict = node("--no-download", "--no-compile", "--verify-key", str(public_key))
    assert verdict.exit_code == ExitCode.VERIFICATION
    assert "no valid signature by the required key" in checks["cache"].summary + checks["cache"].advice
