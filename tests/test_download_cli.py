"""`falco-driver-loader download` end to end: a real subprocess against servers on 127.0.0.1."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from download_helpers import DEFAULT_VERSION, FILENAME, artifact_path, closed_port, response_head, sha256
from elf_fixtures import make_kmod

pytest_plugins = ["download_fixtures", "tls_fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def _module_for_the_named_kernel() -> bytes:
    """A kernel module built for the release the command line names: download judges what it keeps."""
    with tempfile.TemporaryDirectory() as directory:
        return make_kmod(Path(directory), vermagic="6.8.0-79-generic SMP preempt mod_unload modversions ",
                         extra_c=f"const char padding[] = \"{os.urandom(8).hex()}\";").read_bytes()


BODY = _module_for_the_named_kernel()


@pytest.fixture
def host_tree(tmp_path):
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=ubuntu\nVERSION_ID="24.04"\n')
    return root


def command(host_tree, cache_dir, *args):
    """The download command line; `--type kmod` unless args choose a type."""
    types = () if "--type" in args else ("--type", "kmod")
    return [
        sys.executable, "-m", "driver_loader", "download", "--log-format", "text",
        "--host-root", str(host_tree), "--kernel-release", "6.8.0-79-generic",
        "--kernel-version", "#79-Ubuntu SMP PREEMPT_DYNAMIC", "--arch", "x86_64", *types,
        "--driver-version", DEFAULT_VERSION, "--cache-dir", str(cache_dir), *args,
    ]


def environment():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def download(host_tree, tmp_path):
    cache_dir = tmp_path / "cache"

    def run(*args):
        return subprocess.run(command(host_tree, cache_dir, *args), capture_output=True, text=True, timeout=120,
                              env=environment())

    run.cache_dir = cache_dir
    return run


def cached(cache_dir, version=DEFAULT_VERSION):
    return cache_dir / version / "x86_64" / FILENAME


def test_prints_the_path_of_the_verified_artifact(server, download):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    result = download("--repo", server.url_for("/driver"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{cached(download.cache_dir)}\n"
    assert cached(download.cache_dir).read_bytes() == BODY
    assert "publishes no checksum" in result.stderr


def test_json_output(server, download):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    server.expect_request(artifact_path() + ".sha256").respond_with_data(sha256(BODY))
    result = download("--repo", server.url_for("/driver"), "--output", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["path"] == str(cached(download.cache_dir))
    assert document["version"] == DEFAULT_VERSION
    assert document["sha256"] == sha256(BODY)
    assert document["url"] == server.url_for(f"/driver/8.0.0%2Bdriver/x86_64/{FILENAME}")
    assert document["verified_by"] == "sha256-sidecar"


def test_nothing_published_is_exit_3_with_what_was_tried(server, download):
    result = download("--repo", server.url_for("/driver"))
    assert result.returncode == 3
    assert result.stdout == ""
    assert f"tried: {server.url_for('/driver/8.0.0%2Bdriver/x86_64/' + FILENAME)}: HTTP 404" in result.stderr
    assert "next:" in result.stderr and "--compile" in result.stderr


def test_a_checksum_mismatch_is_exit_4_and_shows_both_digests(server, download):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    pinned = "0" * 64
    result = download("--repo", server.url_for("/driver"), "--sha256", pinned)
    assert result.returncode == 4
    assert pinned in result.stderr and sha256(BODY) in result.stderr and "--sha256" in result.stderr
    assert not cached(download.cache_dir).exists()


def test_strict_without_a_checksum_is_exit_4(server, download):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    result = download("--repo", server.url_for("/driver"), "--verify", "strict")
    assert result.returncode == 4
    assert not cached(download.cache_dir).exists()


def test_a_pinned_checksums_file_verifies(server, download, tmp_path):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    sums = tmp_path / "SHA256SUMS.pinned"
    sums.write_text(f"{sha256(BODY)}  {FILENAME}\n")
    result = download("--repo", server.url_for("/driver"), "--checksums", str(sums), "--verify", "strict",
                      "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verified_by"] == "sha256-pinned"


def test_a_verified_cache_entry_is_reused_without_the_http_stack(server, download, host_tree):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    server.expect_request(artifact_path() + ".sha256").respond_with_data(sha256(BODY))
    assert download("--repo", server.url_for("/driver"), "--verify", "strict").returncode == 0
    # The repository is gone now: the second run must neither ask it nor import requests to find that out.
    argv = command(host_tree, download.cache_dir, "--repo", f"http://127.0.0.1:{closed_port()}/driver",
                   "--verify", "strict")[3:]
    code = (
        "import sys\n"
        "from driver_loader.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print([m for m in ('requests', 'urllib3', 'driver_loader.net.http') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=environment())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(cached(download.cache_dir)), "[]"]
    assert "using the cached artifact" in result.stderr


def test_network_failure_is_exit_1(download):
    result = download("--repo", f"http://127.0.0.1:{closed_port()}/driver", "--http-retries", "0")
    assert result.returncode == 1
    assert "refused" in result.stderr.lower()


def test_version_fallback_and_its_switch(server, download):
    server.expect_request("/driver/site/index.json").respond_with_data(
        '["8.0.0+driver", "8.1.0+driver", "8.2.0+driver", "9.0.0+driver"]')
    for version in ("8.1.0+driver", "8.2.0+driver", "9.0.0+driver"):
        server.expect_request(artifact_path(version)).respond_with_data(BODY)
    result = download("--repo", server.url_for("/driver"), "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == "8.2.0+driver"
    result = download("--repo", server.url_for("/driver"), "--no-version-fallback",
                      "--cache-dir", str(download.cache_dir.parent / "other-cache"))
    assert result.returncode == 3


def test_headers_are_sent_and_credentials_stay_out_of_the_output(server, download):
    server.expect_request(artifact_path(), headers={"X-Token-Check": "yes"}).respond_with_data(BODY)
    repo = server.url_for("/driver").replace("http://", "http://mirror:Hunter2Secret@")
    result = download("--repo", repo, "--http-header", "X-Token-Check: yes",
                      "--http-header", "Authorization: Bearer SeCrEtToKeN", "--log-level", "debug",
                      "--output", "json")
    assert result.returncode == 0, result.stderr
    for secret in ("Hunter2Secret", "SeCrEtToKeN"):
        assert secret not in result.stderr and secret not in result.stdout
    assert "****@127.0.0.1" in result.stdout


def test_a_missing_ca_bundle_is_exit_2_before_the_cache_is_touched(download, tmp_path):
    result = download("--repo", f"https://127.0.0.1:{closed_port()}/driver", "--ca-bundle", str(tmp_path / "no.pem"))
    assert result.returncode == 2, result.stderr
    assert "CA bundle" in result.stderr and "does not exist" in result.stderr and "next:" in result.stderr
    assert not download.cache_dir.exists()


def test_tls_needs_the_ca_bundle(download, tls_files, monkeypatch):
    from pytest_httpserver import HTTPServer

    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    tls = HTTPServer(host="127.0.0.1", port=0, ssl_context=tls_files.server_context(), threaded=True)
    tls.no_handler_status_code = 404
    tls.start()
    try:
        tls.expect_request(artifact_path()).respond_with_data(BODY)
        refused = download("--repo", tls.url_for("/driver"), "--no-version-fallback")
        accepted = download("--repo", tls.url_for("/driver"), "--ca-bundle", tls_files.ca_pem)
    finally:
        tls.stop()
    assert refused.returncode == 1 and "TLS verification failed" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr


def test_modern_ebpf_has_nothing_to_download(download):
    result = download("--type", "modern_ebpf", "--repo", f"http://127.0.0.1:{closed_port()}/driver")
    assert result.returncode == 2
    assert "modern_ebpf" in result.stderr


def test_a_killed_download_leaves_nothing_usable(raw_server, host_tree, tmp_path):
    half_sent = threading.Event()
    serve_fully = threading.Event()

    def script(conn, request_line):
        if not request_line.split()[1].endswith(".ko"):
            conn.sendall(response_head("404 Not Found", length=0))
            return
        if serve_fully.is_set():
            conn.sendall(response_head(length=len(BODY)) + BODY)
            return
        conn.sendall(response_head(length=len(BODY)) + BODY[: len(BODY) // 2])
        half_sent.set()
        raw.release.wait(60)

    raw = raw_server(script)
    cache_dir = tmp_path / "cache"
    args = command(host_tree, cache_dir, "--repo", raw.url("/driver"), "--http-timeout", "60")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment())
    try:
        assert half_sent.wait(60), "the loader never started the download"
        directory = cached(cache_dir).parent
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".partial-") for p in directory.glob(".*")):
            assert time.monotonic() < deadline, "no partial file appeared"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    assert not cached(cache_dir).exists()
    assert not Path(str(cached(cache_dir)) + ".meta.json").exists()

    serve_fully.set()
    again = subprocess.run(args, capture_output=True, text=True, timeout=120, env=environment())
    assert again.returncode == 0, again.stderr
    assert cached(cache_dir).read_bytes() == BODY
    assert not any(p.name.startswith(".partial-") for p in cached(cache_dir).parent.iterdir())


@pytest.mark.parametrize("body", [b"<html><body>503 Service Unavailable</body></html>", b"\x7fELF" + b"\0" * 60],
                         ids=["html-error-page", "truncated-elf"])
def test_a_downloaded_file_that_is_not_a_driver_is_refused_and_not_kept(server, download, body):
    # Even with a matching sidecar: a checksum says the server meant to send these bytes, not that they are a driver.
    server.expect_request(artifact_path()).respond_with_data(body)
    server.expect_request(artifact_path() + ".sha256").respond_with_data(sha256(body))
    result = download("--repo", server.url_for("/driver"))
    assert result.returncode == 4, result.stderr
    assert result.stdout == ""
    assert not cached(download.cache_dir).exists()
    assert "Traceback" not in result.stderr


def test_a_module_for_another_kernel_is_refused_by_download(server, download, tmp_path):
    other = make_kmod(tmp_path, vermagic="6.8.0-31-generic SMP preempt mod_unload ", modversions=False).read_bytes()
    server.expect_request(artifact_path()).respond_with_data(other)
    result = download("--repo", server.url_for("/driver"))
    assert result.returncode == 4, result.stderr
    assert "6.8.0-31-generic" in result.stderr
    assert not cached(download.cache_dir).exists()


# -- --verify-key: a detached <file>.sig beside the artifact, as `cosign sign-blob` writes it -------------------------

@pytest.fixture(scope="module")
def signing_keys(tmp_path_factory):
    """Two ECDSA P-256 key pairs made here by the openssl command: the builder's, and somebody else's."""
    directory = tmp_path_factory.mktemp("keys")
    for name in ("builder", "other"):
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                        f"{name}.key"], cwd=directory, check=True, capture_output=True, timeout=60)
        subprocess.run(["openssl", "pkey", "-in", f"{name}.key", "-pubout", "-out", f"{name}.pub"], cwd=directory,
                       check=True, capture_output=True, timeout=60)
    return directory


def openssl_signature(key: Path, body: bytes) -> str:
    """What `cosign sign-blob --key` prints: base64 of a DER ECDSA-SHA256 signature, made here by openssl."""
    import base64

    return base64.b64encode(subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=body,
                                           capture_output=True, check=True, timeout=60).stdout).decode() + "\n"


def test_a_signature_by_the_required_key_is_verified_and_recorded(server, download, signing_keys):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    server.expect_request(artifact_path() + ".sha256").respond_with_data(sha256(BODY))
    server.expect_request(artifact_path() + ".sig").respond_with_data(
        openssl_signature(signing_keys / "builder.key", BODY))
    result = download("--repo", server.url_for("/driver"), "--verify-key", str(signing_keys / "builder.pub"),
                      "--output", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["signed_by"] and len(document["signed_by"]) == 16
    assert "signature verified" in result.stderr
    # The cache remembers which key vouched for the entry: a second run reuses it without asking the server.
    server.clear()
    again = download("--repo", server.url_for("/driver"), "--verify-key", str(signing_keys / "builder.pub"),
                     "--output", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["source"] == "cache"
    # ... but a run that requires another key does not take the entry on the first key's word: it downloads again,
    # and the builder's signature is not the other key's.
    server.no_handler_status_code = 404
    server.expect_request(artifact_path()).respond_with_data(BODY)
    server.expect_request(artifact_path() + ".sig").respond_with_data(
        openssl_signature(signing_keys / "builder.key", BODY))
    other = download("--repo", server.url_for("/driver"), "--verify-key", str(signing_keys / "other.pub"))
    assert other.returncode == 4, other.stderr
    assert "not reusing the cached artifact" in other.stderr and "is not valid for key" in other.stderr


@pytest.mark.parametrize("signature", ["other key", "missing", "garbage", "another file"])
def test_a_missing_or_wrong_signature_is_exit_4_and_nothing_is_kept(server, download, signing_keys, signature):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    server.expect_request(artifact_path() + ".sha256").respond_with_data(sha256(BODY))
    sig = {"other key": openssl_signature(signing_keys / "other.key", BODY),
           "garbage": "not base64 at all!\n",
           "another file": openssl_signature(signing_keys / "builder.key", BODY + b"\0")}.get(signature)
    if sig is not None:
        server.expect_request(artifact_path() + ".sig").respond_with_data(sig)
    result = download("--repo", server.url_for("/driver"), "--verify-key", str(signing_keys / "builder.pub"))
    assert result.returncode == 4, result.stderr
    assert ("has no signature" if signature == "missing" else "is not valid for key") in result.stderr
    assert f"sha256:{sha256(BODY)}" in result.stderr and ".sig" in result.stderr
    assert not cached(download.cache_dir).exists()
    assert not any(p.is_file() for p in download.cache_dir.rglob("*") if not p.name.startswith("."))


def test_without_a_key_no_signature_is_asked_for(server, download):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    result = download("--repo", server.url_for("/driver"))
    assert result.returncode == 0, result.stderr
    assert not any(request.path.endswith(".sig") for request, _ in server.log)


def test_an_unusable_key_file_is_exit_2_before_anything_is_fetched(server, download, tmp_path):
    bad = tmp_path / "rsa.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
                    str(tmp_path / "rsa.key")], check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "pkey", "-in", str(tmp_path / "rsa.key"), "-pubout", "-out", str(bad)], check=True,
                   capture_output=True, timeout=60)
    result = download("--repo", server.url_for("/driver"), "--verify-key", str(bad))
    assert result.returncode == 2, result.stderr
    assert str(bad) in result.stderr
    assert len(server.log) == 0


def test_a_file_repository_needs_the_signature_beside_the_file_too(download, signing_keys, tmp_path):
    place = tmp_path / "mirror" / DEFAULT_VERSION / "x86_64"
    place.mkdir(parents=True)
    (place / FILENAME).write_bytes(BODY)
    (place / f"{FILENAME}.sha256").write_text(f"{sha256(BODY)}  {FILENAME}\n")
    repo = f"file://{tmp_path / 'mirror'}"
    key = str(signing_keys / "builder.pub")
    unsigned = download("--repo", repo, "--verify-key", key)
    assert unsigned.returncode == 4 and "has no signature" in unsigned.stderr, unsigned.stderr
    (place / f"{FILENAME}.sig").write_text(openssl_signature(signing_keys / "builder.key", BODY))
    signed = download("--repo", repo, "--verify-key", key, "--output", "json")
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["signed_by"]
