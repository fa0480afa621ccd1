"""`download --repo oci://...` end to end: a real subprocess against Debian's docker-registry (the CNCF distribution
registry) on 127.0.0.1, filled the way docs/oci-layout.md lays drivers out (tests/oci_helpers.py, not `publish`)."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from download_helpers import DEFAULT_VERSION, FILENAME, sha256
from elf_fixtures import make_kmod
from oci_helpers import digest, make_key, push_driver, sign_manifest, tag_for

pytest_plugins = ["registry_fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def _module() -> bytes:
    with tempfile.TemporaryDirectory() as directory:
        return make_kmod(Path(directory), vermagic="6.8.0-79-generic SMP preempt mod_unload modversions ",
                         extra_c=f"const char padding[] = \"{os.urandom(8).hex()}\";").read_bytes()


BODY = _module()
TAG = tag_for("falco", DEFAULT_VERSION, "x86_64", FILENAME)


@pytest.fixture
def download(tmp_path):
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=ubuntu\nVERSION_ID="24.04"\n')
    cache_dir = tmp_path / "cache"

    def run(*args, env=None):
        environment = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}
        environment.update({"PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path / "home"),
                            "XDG_RUNTIME_DIR": str(tmp_path / "run")}, **(env or {}))
        argv = [sys.executable, "-m", "driver_loader", "download", "--log-format", "text", "--host-root", str(root),
                "--kernel-release", "6.8.0-79-generic", "--kernel-version", "#79-Ubuntu SMP PREEMPT_DYNAMIC",
                "--arch", "x86_64", "--type", "kmod", "--driver-version", DEFAULT_VERSION, "--cache-dir",
                str(cache_dir), "--http-retries", "1", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=environment)

    run.cache_dir = cache_dir
    run.home = tmp_path / "home"
    return run


def kept(cache_dir):
    return sorted(p.name for p in cache_dir.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_a_driver_is_pulled_by_its_tag_and_verified_by_its_layer_digest(registry, download):
    repository = registry.new_repository()
    manifest = push_driver(registry, repository, BODY, FILENAME, tag=TAG)
    result = download("--repo", registry.oci_url(repository), "--verify", "strict", "--output", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["verified_by"] == "sha256-oci-digest" and document["sha256"] == sha256(BODY)
    assert Path(document["path"]).read_bytes() == BODY
    assert document["url"] == f"{registry.oci_url(repository)}@{manifest}"


def test_a_pinned_manifest_digest_is_honoured(registry, download):
    repository = registry.new_repository()
    manifest = push_driver(registry, repository, BODY, FILENAME, tag="anything-else")
    result = download("--repo", registry.oci_url(repository, f"@{manifest}"), "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sha256"] == sha256(BODY)


def test_a_missing_tag_is_no_driver(registry, download):
    repository = registry.new_repository()
    result = download("--repo", registry.oci_url(repository), "--no-version-fallback")
    assert result.returncode == 3, result.stderr
    assert f"{registry.oci_url(repository)}:{TAG}" in result.stderr


@pytest.mark.parametrize("lie", ["tampered blob", "other file name", "two layers", "a layer that is no driver"])
def test_a_registry_that_lies_is_refused_with_exit_4_and_nothing_is_kept(registry, download, lie):
    repository = registry.new_repository()
    body = _module()  # its own bytes: the registry's blob store is shared by the session's tests
    options = {}
    if lie == "other file name":
        options["title"] = "falco_ubuntu-generic_6.8.0-80-generic_80.ko"
    if lie == "two layers":
        options["extra_layers"] = [{"mediaType": "application/octet-stream", "digest": digest(b"x"), "size": 1}]
        options["extra_blobs"] = [b"x"]
    if lie == "a layer that is no driver":  # its digest is right: the ELF checks still apply
        options["layer_digest"] = digest(b"\0" * len(body))
        options["extra_blobs"] = [b"\0" * len(body)]
    push_driver(registry, repository, body, FILENAME, tag=TAG, **options)
    if lie == "tampered blob":
        hexdigest = sha256(body)
        blob = registry.directory / f"storage/docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"
        blob.write_bytes(body[:-4] + b"EVIL")
    result = download("--repo", registry.oci_url(repository))
    assert result.returncode == 4, result.stderr
    assert kept(download.cache_dir) == []


def test_a_pin_that_disagrees_with_the_manifest_stops_before_the_download(registry, download):
    repository = registry.new_repository()
    push_driver(registry, repository, BODY, FILENAME, tag=TAG)
    result = download("--repo", registry.oci_url(repository), "--sha256", "0" * 64)
    assert result.returncode == 4, result.stderr
    assert "pinned by --sha256" in result.stderr and sha256(BODY) in result.stderr
    assert kept(download.cache_dir) == []


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    return {name: make_key(directory, name) for name in ("builder", "other")}


def test_a_signed_driver_needs_the_builders_signature(registry, download, keys):
    repository = registry.new_repository()
    manifest = push_driver(registry, repository, BODY, FILENAME, tag=TAG)
    builder_pub = str(keys["builder"].with_suffix(".pub"))
    unsigned = download("--repo", registry.oci_url(repository), "--verify-key", builder_pub)
    assert unsigned.returncode == 4, unsigned.stderr
    assert "has no signature" in unsigned.stderr and manifest in unsigned.stderr
    assert kept(download.cache_dir) == []
    sign_manifest(registry, repository, manifest, keys["builder"])
    signed = download("--repo", registry.oci_url(repository), "--verify-key", builder_pub, "--output", "json")
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["signed_by"]
    other = download("--repo", registry.oci_url(repository), "--verify-key", str(keys["other"].with_suffix(".pub")))
    assert other.returncode == 4 and "is not valid for key" in other.stderr


def test_a_signature_replayed_from_another_driver_is_refused(registry, download, keys):
    repository = registry.new_repository()
    first = push_driver(registry, repository, BODY, "falco_ubuntu-generic_6.8.0-80-generic_80.ko",
                        tag="innocent")
    manifest = push_driver(registry, repository, BODY, FILENAME, tag=TAG)
    # The builder signed `first`; a pusher copies that signature document to the tag of `manifest`.
    sign_manifest(registry, repository, manifest, keys["builder"], vouched_digest=first)
    result = download("--repo", registry.oci_url(repository), "--verify-key",
                      str(keys["builder"].with_suffix(".pub")))
    assert result.returncode == 4, result.stderr
    assert "for another manifest" in result.stderr


def test_credentials_from_an_auth_file_and_a_clear_refusal_without_them(auth_registry, download, tmp_path):
    repository = auth_registry.new_repository()
    push_driver(auth_registry, repository, BODY, FILENAME, tag=TAG)
    anonymous = download("--repo", auth_registry.oci_url(repository))
    assert anonymous.returncode == 1, anonymous.stderr
    assert "requires credentials" in anonymous.stderr and "config.json" in anonymous.stderr
    wrong = download("--repo", auth_registry.oci_url(repository), "--registry-username", auth_registry.username,
                     env={"FALCOCTL_DRIVER_REGISTRY_PASSWORD": "wrong-secret-value"})
    assert wrong.returncode == 1 and "refused the credentials" in wrong.stderr
    assert "wrong-secret-value" not in wrong.stderr + wrong.stdout
    auth = auth_registry.auth_file(tmp_path / "docker")
    good = download("--repo", auth_registry.oci_url(repository), "--registry-auth-file", str(auth),
                    "--log-level", "debug")
    assert good.returncode == 0, good.stderr
    assert auth_registry.password not in good.stderr + good.stdout


def test_a_token_registry(token_registry, download):
    repository = token_registry.new_repository()
    push_driver(token_registry, repository, BODY, FILENAME, tag=TAG)
    result = download("--repo", token_registry.oci_url(repository), "--registry-username", token_registry.username,
                      "--log-level", "debug", env={"FALCOCTL_DRIVER_REGISTRY_PASSWORD": token_registry.password})
    assert result.returncode == 0, result.stderr
    assert token_registry.password not in result.stderr + result.stdout


def test_tls_on_loopback_with_the_ca_bundle(tls_registry, download, tmp_path):
    repository = tls_registry.new_repository()
    push_driver(tls_registry, repository, BODY, FILENAME, tag=TAG)
    untrusted = download("--repo", tls_registry.oci_url(repository))
    assert untrusted.returncode == 1 and "certificate" in untrusted.stderr
    trusted = download("--repo", tls_registry.oci_url(repository), "--ca-bundle", tls_registry.ca_pem)
    assert trusted.returncode == 0, trusted.stderr


def test_an_oci_repository_is_validated_with_the_other_settings(download):
    result = download("--repo", "oci://Registry.example/UPPER/case")
    assert result.returncode == 2 and "lowercase" in result.stderr


def test_doctor_looks_for_the_tag_and_its_signature(registry, tmp_path, keys):
    """doctor, for the legacy probe (this machine's kernel may have no module support at all, which rules out kmod
    whatever the repository has)."""
    repository = registry.new_repository()
    probe = FILENAME.replace(".ko", ".o")
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=ubuntu\nVERSION_ID="24.04"\n')

    def doctor(*args):
        argv = [sys.executable, "-m", "driver_loader", "doctor", "--output", "json", "--host-root", str(root),
                "--kernel-release", "6.8.0-79-generic", "--kernel-version", "#79-Ubuntu SMP PREEMPT_DYNAMIC",
                "--arch", "x86_64", "--type", "ebpf", "--driver-version", DEFAULT_VERSION, "--cache-dir",
                str(tmp_path / "cache"), "--no-compile", "--repo", registry.oci_url(repository), *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        return {c["name"]: c for c in json.loads(result.stdout)["checks"]}

    checks = doctor()
    assert checks["repositories"]["status"] == "pass", checks["repositories"]
    assert checks["prebuilt"]["status"] == "warn"
    tag = tag_for("falco", DEFAULT_VERSION, "x86_64", probe)
    manifest = push_driver(registry, repository, b"\x7fELF probe", probe, tag=tag, kind="ebpf")
    checks = doctor()
    assert checks["prebuilt"]["status"] == "pass" and tag in checks["prebuilt"]["summary"]
    public = str(keys["builder"].with_suffix(".pub"))
    checks = doctor("--verify-key", public)
    assert checks["prebuilt"]["status"] == "warn" and "no signature" in checks["prebuilt"]["summary"]
    sign_manifest(registry, repository, manifest, keys["builder"])
    assert doctor("--verify-key", public)["prebuilt"]["status"] == "pass"


def test_an_anonymous_token_registry_costs_three_requests_once_its_challenge_is_known(token_registry, download):
    """token, manifest, blob: the first run learns the token endpoint from a 401 and keeps it in the cache."""
    repository = token_registry.new_repository()
    push_driver(token_registry, repository, BODY, FILENAME, tag=TAG)
    token_registry.token_server.anonymous_pulls = True
    try:
        def pull():
            before = token_registry.token_server.requests
            result = download("--repo", token_registry.oci_url(repository), "--log-level", "debug")
            assert result.returncode == 0, result.stderr
            registry_requests = result.stderr.count("registry request")
            return registry_requests + token_registry.token_server.requests - before

        assert pull() == 4  # manifest (401), token, manifest, blob
        for entry in download.cache_dir.rglob("*.ko"):
            entry.unlink()  # the driver is gone, the challenge is kept
        assert pull() == 3
    finally:
        token_registry.token_server.anonymous_pulls = False
