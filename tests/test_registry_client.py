"""The OCI registry client (driver_loader/net/oci.py) and registry credentials (driver_loader/net/registry_auth.py):
round trips against Debian's distribution registry (anonymous, Basic, TLS, Bearer tokens), interoperability with
skopeo, and a stand-in server for the faults a real registry does not produce."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from download_helpers import Sleeps
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Response

from driver_loader.core.errors import ExitCode, HttpFailure, UsageError, VerificationError
from driver_loader.core.settings import HttpOptions
from driver_loader.net.http import build_session
from driver_loader.net.oci import (
    MANIFEST_LIMIT,
    MAX_TAG_PAGES,
    OCI_MANIFEST,
    Challenge,
    RegistryClient,
    is_loopback,
    parse_www_authenticate,
)
from driver_loader.net.registry_auth import (
    AUTH_FILE_LIMIT,
    Credentials,
    auth_file_paths,
    find_credentials,
    match_entry,
    parse_auth_file,
    read_auth_file,
)

pytest_plugins = ["download_fixtures", "registry_fixtures", "tls_fixtures"]

REPO = "drivers/kmod"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class Artifact:
    layer: bytes
    config: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)


def make_artifact(payload: bytes = b"\x7fELF driver bytes") -> Artifact:
    config = json.dumps({"layout": 1, "fileName": "falco.ko"}, sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.falco-driver-loader.driver.v1",
        "config": {"mediaType": "application/vnd.falco-driver-loader.driver.config.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.falco-driver-loader.driver.kmod.v1", "digest": digest_of(payload),
                    "size": len(payload), "annotations": {"org.opencontainers.image.title": "falco.ko"}}],
    }, sort_keys=True, separators=(",", ":")).encode()
    return Artifact(payload, config, manifest)


def push(client: RegistryClient, artifact: Artifact, tag: str) -> str:
    client.push_blob(digest_of(artifact.config), artifact.config, len(artifact.config))
    client.push_blob(digest_of(artifact.layer), artifact.layer, len(artifact.layer))
    return client.push_manifest(tag, artifact.manifest, OCI_MANIFEST)


def session_for(sleeps=None, **options):
    options.setdefault("timeout", 5.0)
    options.setdefault("retries", 2)
    return build_session(HttpOptions(**options), sleep=sleeps if sleeps is not None else Sleeps())


def client_for(target, repository: str = REPO, *, session=None, plain_http=None, **kwargs) -> RegistryClient:
    """A client for a TestRegistry or a pytest-httpserver."""
    if isinstance(target, HTTPServer):
        host, plain = f"127.0.0.1:{target.port}", True
    else:
        host, plain = target.host, target.scheme == "http"
    if session is None:
        session = session_for(ca_bundle=getattr(target, "ca_pem", None))
    return RegistryClient(session, host, repository, plain_http=plain if plain_http is None else plain_http,
                          **kwargs)


def pull_blob(client: RegistryClient, digest: str, max_size: int = 1 << 20) -> bytes:
    with client.session.deadline(), client.open_blob(digest, max_size=max_size) as response:
        return b"".join(client.session.iter_body(response))


@pytest.fixture(scope="session")
def _other_server():
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def other_server(_other_server):
    """A second server on another port of 127.0.0.1: another host, as far as credentials go."""
    _other_server.clear()
    _other_server.no_handler_status_code = 404
    yield _other_server
    _other_server.clear()


@pytest.fixture(scope="module")
def https_server(tls_files):
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=tls_files.server_context())
    server.start()
    yield server
    server.stop()


# -- against the real registry ---------------------------------------------------------------------------------------

def test_anonymous_round_trip_by_tag_and_digest(registry, tmp_path):
    client = client_for(registry, registry.new_repository())
    artifact = make_artifact()
    layer_file = tmp_path / "falco.ko"
    layer_file.write_bytes(artifact.layer)
    assert client.push_blob(digest_of(artifact.layer), str(layer_file), len(artifact.layer)) is True
    assert client.push_blob(digest_of(artifact.layer), artifact.layer, len(artifact.layer)) is False  # there already
    assert push(client, artifact, "8.0.0_x86_64_falco.ko-abc") == artifact.digest

    for reference in ("8.0.0_x86_64_falco.ko-abc", artifact.digest):
        manifest = client.get_manifest(reference)
        assert manifest.data == artifact.manifest
        assert manifest.digest == artifact.digest
        assert manifest.media_type == OCI_MANIFEST
    assert client.manifest_digest("8.0.0_x86_64_falco.ko-abc") == artifact.digest
    assert pull_blob(client, digest_of(artifact.layer)) == artifact.layer
    assert client.read_blob(digest_of(artifact.config), max_size=4096) == artifact.config
    assert client.list_tags() == (["8.0.0_x86_64_falco.ko-abc"], True)
    assert client.request_count == client.session.request_count


def test_head_for_a_missing_tag_is_none_and_get_is_not_found(registry):
    client = client_for(registry, registry.new_repository())
    assert client.manifest_digest("no-such-tag") is None
    with pytest.raises(HttpFailure) as info:
        client.get_manifest("no-such-tag")
    assert info.value.not_found and info.value.exit_code == ExitCode.RUNTIME
    assert "MANIFEST_UNKNOWN" in info.value.message or "NAME_UNKNOWN" in info.value.message
    assert client.list_tags() == ([], True)


def test_a_blob_tampered_in_the_registry_storage_is_refused(registry):
    client = client_for(registry, registry.new_repository())
    artifact = make_artifact(b"tamper me " * 100)
    push(client, artifact, "t1")
    hexdigest = digest_of(artifact.layer).split(":")[1]
    stored = registry.directory / "storage/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    stored.write_bytes(b"TAMPER ME " * 100)
    with pytest.raises(VerificationError) as info:
        client.read_blob(digest_of(artifact.layer), max_size=1 << 20)
    assert info.value.exit_code == ExitCode.VERIFICATION
    assert "does not match its digest" in info.value.message


def test_a_manifest_tampered_in_the_registry_storage_is_refused(registry):
    client = client_for(registry, registry.new_repository())
    artifact = make_artifact(b"manifest tamper")
    push(client, artifact, "t1")
    hexdigest = artifact.digest.split(":")[1]
    stored = registry.directory / "storage/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    stored.write_bytes(artifact.manifest.replace(b'"falco.ko"', b'"other.ko"'))
    for reference in ("t1", artifact.digest):
        with pytest.raises(VerificationError):
            client.get_manifest(reference)


def test_basic_auth_round_trip_with_credentials_from_the_docker_config(auth_registry, tmp_path, monkeypatch):
    repository = auth_registry.new_repository()
    config_dir = tmp_path / "docker"
    auth_registry.auth_file(config_dir)
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    search = find_credentials(auth_registry.host, repository, uid=os.getuid())
    assert search.credentials is not None and search.credentials.username == auth_registry.username
    client = client_for(auth_registry, repository, credentials=search)
    artifact = make_artifact()
    assert push(client, artifact, "v1") == artifact.digest
    assert client_for(auth_registry, repository, credentials=search).get_manifest("v1").data == artifact.manifest
    assert pull_blob(client, digest_of(artifact.layer)) == artifact.layer


def test_basic_auth_without_credentials_names_the_files_looked_at(auth_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nothing-here"))
    search = find_credentials(auth_registry.host, "drivers/x")
    assert search.credentials is None
    with pytest.raises(HttpFailure) as info:
        client_for(auth_registry, "drivers/x", credentials=search).get_manifest("v1")
    failure = info.value
    assert failure.status == 401 and failure.exit_code == ExitCode.RUNTIME
    assert "requires credentials" in failure.message
    assert str(tmp_path / "nothing-here" / "config.json") in failure.message
    assert "--registry-username" in failure.hint and "REGISTRY_AUTH_FILE" in failure.hint
    assert "\n" not in failure.message


def test_a_wrong_password_is_a_clear_error_that_names_no_secret(auth_registry, logs):
    wrong = "Wr0ng-Passw0rd-zz9"
    client = client_for(auth_registry, auth_registry.new_repository(),
                        credentials=Credentials(auth_registry.username, wrong, source="--registry-password"))
    with pytest.raises(HttpFailure) as info:
        client.get_manifest("v1")
    failure = info.value
    assert failure.status == 401
    assert "refused the credentials" in failure.message and "--registry-password" in failure.message
    basic = base64.b64encode(f"{auth_registry.username}:{wrong}".encode()).decode()
    output = logs()
    for secret in (wrong, basic):
        assert secret not in f"{failure.message} {failure.hint} {failure.url}"
        assert secret not in output
    assert client.request_count == 2  # the challenge, then the credentials once: no loop


def test_tls_round_trip_with_the_test_ca(tls_registry):
    client = client_for(tls_registry, tls_registry.new_repository())
    assert client.base_url.startswith("https://")
    artifact = make_artifact()
    push(client, artifact, "v1")
    assert client.get_manifest("v1").digest == artifact.digest


def test_tls_without_the_ca_is_refused(tls_registry):
    client = client_for(tls_registry, tls_registry.new_repository(), session=session_for(retries=0))
    with pytest.raises(HttpFailure) as info:
        client.manifest_digest("v1")
    assert "TLS verification failed" in info.value.message and "--ca-bundle" in info.value.hint


def test_token_registry_round_trip_and_three_requests_with_a_known_challenge(token_registry):
    repository = token_registry.new_repository()
    credentials = Credentials(token_registry.username, token_registry.password)
    pusher = client_for(token_registry, repository, credentials=credentials)
    artifact = make_artifact()
    before = token_registry.token_server.requests
    push(pusher, artifact, "v1")
    assert token_registry.token_server.requests - before == 1  # one push token for every request
    assert pusher.challenge is not None and pusher.challenge.scheme == "bearer"

    # A node that kept the challenge from an earlier run: token, manifest, blob.
    saved = Challenge.from_json(pusher.challenge.to_json())
    puller = client_for(token_registry, repository, credentials=credentials, challenge=saved)
    manifest = puller.get_manifest("v1")
    assert pull_blob(puller, digest_of(artifact.layer)) == artifact.layer
    assert manifest.digest == artifact.digest
    assert puller.request_count == 3

    # Without it: the registry's challenge first.
    fresh = client_for(token_registry, repository, credentials=credentials)
    fresh.get_manifest("v1")
    assert fresh.request_count == 3  # challenge, token, manifest


def test_token_registry_wrong_password(token_registry, logs):
    wrong = "Not-The-Passw0rd-41"
    client = client_for(token_registry, token_registry.new_repository(),
                        credentials=Credentials(token_registry.username, wrong, source="the auth file"))
    with pytest.raises(HttpFailure) as info:
        client.get_manifest("v1")
    assert info.value.status == 401
    assert "token endpoint refused the credentials" in info.value.message
    assert wrong not in info.value.message + info.value.hint + logs()


# -- interoperability with skopeo ------------------------------------------------------------------------------------

def skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def skopeo_tool():
    from registry_fixtures import _require

    _require("skopeo", "skopeo")


@pytest.mark.parametrize("variant", ["registry", "auth_registry"])
def test_skopeo_reads_what_the_client_pushes(variant, request, skopeo_tool):
    target = request.getfixturevalue(variant)
    repository = target.new_repository()
    credentials = Credentials(target.username, target.password) if target.username else None
    artifact = make_artifact()
    push(client_for(target, repository, credentials=credentials), artifact, "v1")
    reference = f"docker://{target.host}/{repository}:v1"
    raw = skopeo("inspect", "--raw", *target.skopeo_args(), reference)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.encode() == artifact.manifest
    config = skopeo("inspect", "--config", "--raw", *target.skopeo_args(), reference)
    assert config.returncode == 0, config.stderr
    assert config.stdout.encode() == artifact.config
    # skopeo's image view sees an artifact of our config type, not an image.
    image_view = skopeo("inspect", *target.skopeo_args(), reference)
    assert "application/vnd.falco-driver-loader.driver.config.v1+json" in image_view.stderr


def test_the_client_pulls_what_skopeo_pushes(auth_registry, tmp_path, skopeo_tool):
    artifact = make_artifact(b"pushed by skopeo")
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    for blob in (artifact.layer, artifact.config, artifact.manifest):
        (layout / "blobs" / "sha256" / digest_of(blob).split(":")[1]).write_bytes(blob)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": artifact.digest, "size": len(artifact.manifest),
         "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
    repository = auth_registry.new_repository()
    copied = skopeo("copy", "--preserve-digests", *auth_registry.skopeo_args("dest-"), f"oci:{layout}:v1",
                    f"docker://{auth_registry.host}/{repository}:v1")
    assert copied.returncode == 0, copied.stderr
    client = client_for(auth_registry, repository,
                        credentials=Credentials(auth_registry.username, auth_registry.password))
    manifest = client.get_manifest("v1")
    assert (manifest.data, manifest.digest) == (artifact.manifest, artifact.digest)
    assert client.manifest_digest("v1") == artifact.digest
    assert pull_blob(client, digest_of(artifact.layer)) == artifact.layer


# -- a stand-in server for faults ------------------------------------------------------------------------------------

def bearer_challenge(server: HTTPServer, scope: str = f"repository:{REPO}:pull") -> str:
    return f'Bearer realm="{server.url_for("/token")}",service="reg.test",scope="{scope}"'


def test_bearer_flow_sends_service_scope_and_basic_credentials_to_the_realm(server, logs):
    artifact = make_artifact()
    token = "tok-ABCDEFGH-1234"

    def manifests(request):
        if request.headers.get("Authorization") == f"Bearer {token}":
            return Response(artifact.manifest, content_type=OCI_MANIFEST)
        return Response("{}", status=401, headers={"WWW-Authenticate": bearer_challenge(server)})

    server.expect_request(f"/v2/{REPO}/manifests/v1").respond_with_handler(manifests)
    server.expect_request("/token").respond_with_json({"access_token": token, "expires_in": 60})
    client = client_for(server, credentials=Credentials("bob", "b0b-secret-pw"))
    manifest = client.get_manifest("v1")
    assert manifest.digest == artifact.digest
    token_request = next(r for r, _ in server.log if r.path == "/token")
    assert token_request.args.get("service") == "reg.test"
    assert token_request.args.get("scope") == f"repository:{REPO}:pull"
    assert token_request.headers["Authorization"] == "Basic " + base64.b64encode(b"bob:b0b-secret-pw").decode()
    assert client.request_count == 3
    assert "Accept" in server.log[0][0].headers and OCI_MANIFEST in server.log[0][0].headers["Accept"]
    assert token not in logs() and "b0b-secret-pw" not in logs()
    assert client.session.redact(f"Authorization: Bearer {token}").count(token) == 0


def test_an_identity_token_is_sent_as_an_oauth2_refresh_token(server):
    def manifests(request):
        if request.headers.get("Authorization") == "Bearer from-refresh":
            return Response(b"{}", content_type=OCI_MANIFEST)
        return Response("{}", status=401, headers={"WWW-Authenticate": bearer_challenge(server)})

    server.expect_request(f"/v2/{REPO}/manifests/v1").respond_with_handler(manifests)
    server.expect_request("/token", method="POST").respond_with_json({"access_token": "from-refresh"})
    client = client_for(server, credentials=Credentials(identity_token="refresh-XYZ-123456"))
    client.get_manifest("v1")
    form = next(r for r, _ in server.log if r.path == "/token").form
    assert form["grant_type"] == "refresh_token" and form["refresh_token"] == "refresh-XYZ-123456"
    assert form["scope"] == f"repository:{REPO}:pull" and form["service"] == "reg.test"


def test_an_expired_token_is_fetched_again_once(server):
    artifact = make_artifact()
    issued = []
    valid = {"tok-1": 1}  # tok-1 works once, then it has expired

    def token(request):
        issued.append(f"tok-{len(issued) + 1}")
        valid.setdefault(issued[-1], 10)
        return Response(json.dumps({"token": issued[-1]}), content_type="application/json")

    def guarded(body):
        def handler(request):
            value = request.headers.get("Authorization", "").replace("Bearer ", "")
            if valid.get(value, 0) > 0:
                valid[value] -= 1
                return Response(body, content_type=OCI_MANIFEST)
            return Response("{}", status=401, headers={"WWW-Authenticate": bearer_challenge(server)})
        return handler

    server.expect_request("/token").respond_with_handler(token)
    server.expect_request(f"/v2/{REPO}/manifests/v1").respond_with_handler(guarded(artifact.manifest))
    server.expect_request(f"/v2/{REPO}/blobs/{digest_of(artifact.layer)}").respond_with_handler(
        guarded(artifact.layer))
    client = client_for(server)
    client.get_manifest("v1")
    assert pull_blob(client, digest_of(artifact.layer)) == artifact.layer
    assert issued == ["tok-1", "tok-2"]


def test_a_token_the_registry_never_accepts_fails_after_one_refresh(server):
    server.expect_request("/token").respond_with_json({"token": "useless-token"})
    server.expect_request(f"/v2/{REPO}/manifests/v1").respond_with_data(
        "{}", status=401, headers={"WWW-Authenticate": bearer_challenge(server)})
    client = client_for(server, credentials=Credentials("bob", "pw-pw-pw-pw"))
    with pytest.raises(HttpFailure) as info:
        client.get_manifest("v1")
    assert info.value.status == 401 and "refused the credentials" in info.value.message
    assert len(server.log) == 3  # manifest, token, manifest
    with pytest.raises(HttpFailure):
        client.get_manifest("v1")  # the cached token is refused: one new token, then the error
    assert len(server.log) == 6


def test_a_blob_redirect_to_another_host_is_followed_without_the_authorization_header(server, other_server):
    artifact = make_artifact(b"in object storage")
    storage_path = "/bucket/blob"
    storage_url = other_server.url_for(storage_path) + "?X-Amz-Signature=s1gnature0123456789"

    def blob(request):
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(b"bob:pw-1234567").decode():
            return Response("{}", status=401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return Response("", status=307, headers={"Location": storage_url})

    server.expect_request(f"/v2/{REPO}/blobs/{digest_of(artifact.layer)}").respond_with_handler(blob)
    other_server.expect_request(storage_path).respond_with_data(artifact.layer)
    client = client_for(server, credentials=Credentials("bob", "pw-1234567"))
    assert client.read_blob(digest_of(artifact.layer), max_size=1024) == artifact.layer
    assert server.log[-1][0].headers.get("Authorization", "").startswith("Basic ")
    (storage_request, _), = other_server.log
    assert "Authorization" not in storage_request.headers


def test_object_storage_refusing_a_redirected_blob_is_not_called_a_credentials_problem(server, other_server):
    data = b"expired link"
    server.expect_request(f"/v2/{REPO}/blobs/{digest_of(data)}").respond_with_data(
        "", status=307, headers={"Location": other_server.url_for("/bucket/blob")})
    other_server.expect_request("/bucket/blob").respond_with_data("<Error>AccessDenied</Error>", status=403)
    with pytest.raises(HttpFailure) as info:
        client_for(server).open_blob(digest_of(data), max_size=1024)
    assert "HTTP 403 Forbidden" in info.value.message and "credentials" not in info.value.message
    assert "AccessDenied" not in info.value.message


def test_5xx_answers_are_retried(server):
    artifact = make_artifact()
    answers = iter([500, 503])

    def manifests(request):
        status = next(answers, 200)
        return Response(artifact.manifest if status == 200 else "busy", status=status, content_type=OCI_MANIFEST)

    server.expect_request(f"/v2/{REPO}/manifests/v1").respond_with_handler(manifests)
    sleeps = Sleeps()
    client = client_for(server, session=session_for(sleeps, retries=3))
    assert client.get_manifest("v1").digest == artifact.digest
    assert len(server.log) == 3 and len(sleeps) == 2


def test_5xx_after_the_retries_is_an_error_with_advice(server):
    server.expect_request(f"/v2/{REPO}/manifests/v1").respond_with_data("down", status=503)
    client = client_for(server, session=session_for(retries=1))
    with pytest.raises(HttpFailure) as info:
        client.get_manifest("v1")
    assert info.value.status == 503 and "try again later" in info.value.hint
    assert f"/v2/{REPO}/manifests/v1" in info.value.message


@pytest.mark.parametrize("declared", [True, False])
def test_a_manifest_larger_than_the_cap_is_refused(server, declared):
    body = b"{" + b" " * MANIFEST_LIMIT + b"}"
    if declared:
        server.expect_request(f"/v2/{REPO}/manifests/v1").respond_with_data(body, content_type=OCI_MANIFEST)
    else:
        server.expect_request(f"/v2/{REPO}/manifests/v1").respond_with_handler(
            lambda request: Response(iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                                     content_type=OCI_MANIFEST))
    with pytest.raises(HttpFailure) as info:
        client_for(server).get_manifest("v1")
    assert f"{MANIFEST_LIMIT}" in info.value.message and "manifest" in info.value.message


def test_a_docker_content_digest_that_lies_is_a_verification_error(server):
    artifact = make_artifact()
    server.expect_request(f"/v2/{REPO}/manifests/v1").respond_with_data(
        artifact.manifest, content_type=OCI_MANIFEST, headers={"Docker-Content-Digest": digest_of(b"other")})
    with pytest.raises(VerificationError) as info:
        client_for(server).get_manifest("v1")
    assert info.value.exit_code == ExitCode.VERIFICATION
    assert digest_of(b"other") in info.value.message and artifact.digest in info.value.message


def test_a_pinned_digest_must_match_the_bytes(server):
    artifact, other = make_artifact(b"a"), make_artifact(b"b")
    server.expect_request(f"/v2/{REPO}/manifests/{artifact.digest}").respond_with_data(
        other.manifest, content_type=OCI_MANIFEST)
    with pytest.raises(VerificationError) as info:
        client_for(server).get_manifest(artifact.digest)
    assert artifact.digest in info.value.message and other.digest in info.value.message


def test_a_blob_over_the_callers_size_or_not_its_manifest_size_is_refused(server):
    data = b"x" * 2000
    server.expect_request(f"/v2/{REPO}/blobs/{digest_of(data)}").respond_with_data(data)
    client = client_for(server)
    with pytest.raises(HttpFailure) as info:
        client.open_blob(digest_of(data), max_size=1000)
    assert "more than the 1000 allowed" in info.value.message
    with pytest.raises(VerificationError):
        client.open_blob(digest_of(data), max_size=4000, expected_size=1999)


def test_endless_tag_pagination_is_capped(server):
    def page(request):
        number = int(request.args.get("last", "0").lstrip("t") or 0) + 1
        link = {"Link": f'</v2/{REPO}/tags/list?n=1&last=t{number}>; rel="next"'} if number < 1000 else {}
        return Response(json.dumps({"name": REPO, "tags": [f"t{number}"]}), content_type="application/json",
                        headers=link)

    server.expect_request(f"/v2/{REPO}/tags/list").respond_with_handler(page)
    client = client_for(server)
    listed = client.list_tags(limit=30)
    assert listed.complete is False and listed.tags == [f"t{n}" for n in range(1, 31)]
    assert len(server.log) == 30


def test_endless_empty_pages_stop_at_the_page_cap(server):
    def page(request):
        number = int(request.args.get("page", "0")) + 1
        link = {"Link": f'<?page={number}>; rel="next"'} if number < 10 * MAX_TAG_PAGES else {}  # bounded
        return Response('{"tags":[]}', content_type="application/json", headers=link)

    server.expect_request(f"/v2/{REPO}/tags/list").respond_with_handler(page)
    assert client_for(server).list_tags() == ([], False)
    assert len(server.log) == MAX_TAG_PAGES


def test_a_next_page_on_another_host_is_refused(server, other_server):
    server.expect_request(f"/v2/{REPO}/tags/list").respond_with_json(
        {"tags": ["a"]}, headers={"Link": f'<{other_server.url_for("/steal")}>; rel="next"'})
    with pytest.raises(HttpFailure, match="another host"):
        client_for(server).list_tags()
    assert other_server.log == []


def test_upload_to_a_relative_location_with_a_query(server):
    data = b"blob to upload"
    server.expect_request(f"/v2/{REPO}/blobs/{digest_of(data)}", method="HEAD").respond_with_data("", status=404)
    server.expect_request(f"/v2/{REPO}/blobs/uploads/", method="POST").respond_with_data(
        "", status=202, headers={"Location": "/upload/session-1?_state=opaque"})
    server.expect_request("/upload/session-1", method="PUT").respond_with_data(
        "", status=201, headers={"Docker-Content-Digest": digest_of(data)})
    assert client_for(server).push_blob(digest_of(data), data, len(data)) is True
    put = server.log[-1][0]
    assert put.args["_state"] == "opaque" and put.args["digest"] == digest_of(data)
    assert put.get_data() == data and put.headers["Content-Type"] == "application/octet-stream"


def test_upload_location_on_another_host_gets_no_credentials(server, other_server):
    data = b"blob elsewhere"
    expected = "Basic " + base64.b64encode(b"bob:pw-1234567").decode()

    def guarded(status, headers=None):
        def handler(request):
            if request.headers.get("Authorization") != expected:
                return Response("", status=401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
            return Response("", status=status, headers=headers or {})
        return handler

    server.expect_request(f"/v2/{REPO}/blobs/{digest_of(data)}", method="HEAD").respond_with_handler(guarded(404))
    server.expect_request(f"/v2/{REPO}/blobs/uploads/", method="POST").respond_with_handler(
        guarded(202, {"Location": other_server.url_for("/uploads/1")}))
    other_server.expect_request("/uploads/1", method="PUT").respond_with_data("", status=201)
    client = client_for(server, credentials=Credentials("bob", "pw-1234567"))
    assert client.push_blob(digest_of(data), data, len(data)) is True
    (put, _), = other_server.log
    assert "Authorization" not in put.headers and put.get_data() == data


def test_an_upload_the_registry_rejects_names_its_error_code(server):
    data = b"blob"
    server.expect_request(f"/v2/{REPO}/blobs/{digest_of(data)}", method="HEAD").respond_with_data("", status=404)
    server.expect_request(f"/v2/{REPO}/blobs/uploads/", method="POST").respond_with_data(
        "", status=202, headers={"Location": "/upload/2"})
    server.expect_request("/upload/2", method="PUT").respond_with_json(
        {"errors": [{"code": "DIGEST_INVALID", "message": "echo <script> secret"}]}, status=400)
    with pytest.raises(HttpFailure) as info:
        client_for(server).push_blob(digest_of(data), data, len(data))
    assert "DIGEST_INVALID" in info.value.message and "echo" not in info.value.message


def test_push_manifest_checks_the_registry_digest(server):
    artifact = make_artifact()
    server.expect_request(f"/v2/{REPO}/manifests/v1", method="PUT").respond_with_data(
        "", status=201, headers={"Docker-Content-Digest": artifact.digest})
    assert client_for(server).push_manifest("v1", artifact.manifest, OCI_MANIFEST) == artifact.digest
    assert server.log[0][0].headers["Content-Type"] == OCI_MANIFEST
    server.clear()
    server.expect_request(f"/v2/{REPO}/manifests/v1", method="PUT").respond_with_data(
        "", status=201, headers={"Docker-Content-Digest": digest_of(b"else")})
    with pytest.raises(VerificationError):
        client_for(server).push_manifest("v1", artifact.manifest, OCI_MANIFEST)


def test_a_plain_http_token_realm_for_an_https_registry_is_refused(https_server, tls_files, other_server):
    https_server.clear()
    https_server.expect_request(f"/v2/{REPO}/manifests/v1").respond_with_data(
        "{}", status=401, headers={"WWW-Authenticate": f'Bearer realm="{other_server.url_for("/token")}"'})
    client = client_for(https_server, plain_http=False, session=session_for(ca_bundle=tls_files.ca_pem),
                        credentials=Credentials("bob", "pw-1234567"))
    with pytest.raises(HttpFailure, match="plain http"):
        client.get_manifest("v1")
    assert other_server.log == []


@pytest.mark.parametrize("registry_host, repository, reference", [
    ("bad host", REPO, "v1"),
    ("127.0.0.1:5000", "Upper/Case", "v1"),
    ("127.0.0.1:5000", REPO, "-leading-dash"),
    ("127.0.0.1:5000", REPO, "sha256:1234"),
])
def test_malformed_names_are_usage_errors(registry_host, repository, reference):
    with pytest.raises(UsageError):
        RegistryClient(session_for(), registry_host, repository, plain_http=True).get_manifest(reference)


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("10.0.0.1", False), ("registry.example", False), ("128.0.0.1", False),
])
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


# -- WWW-Authenticate ------------------------------------------------------------------------------------------------

def test_parse_www_authenticate():
    bearer, = parse_www_authenticate(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:team/drivers:pull,push",error="insufficient_scope"')
    assert bearer == Challenge("bearer", "https://auth.example/token", "registry.example",
                               "repository:team/drivers:pull,push")
    basic, bearer2 = parse_www_authenticate('Basic realm="Registry Realm", Bearer realm=https://a/t,service=s')
    assert basic == Challenge("basic", "Registry Realm")
    assert bearer2 == Challenge("bearer", "https://a/t", "s")
    assert parse_www_authenticate('Bearer realm="a\\"b"')[0].realm == 'a"b'
    assert parse_www_authenticate("Bearer realm=" + "x" * 5000) == []
    assert Challenge.from_json("not json") is None
    assert Challenge.from_json('{"scheme": "digest"}') is None


# -- credentials -----------------------------------------------------------------------------------------------------

def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


AUTHS = parse_auth_file(json.dumps({"auths": {
    "reg.example:5000": {"auth": b64("port-user:port-pass")},
    "reg.example": {"auth": b64("host-user:host-pass")},
    "reg.example/team": {"auth": b64("team-user:team-pass")},
    "reg.example/team/drivers": {"auth": b64("drivers-user:drivers-pass")},
    "https://legacy.example/v1/": {"auth": b64("legacy-user:legacy-pass")},
    "https://index.docker.io/v1/": {"auth": b64("hub-user:hub-pass")},
    "helper.example": {},
    "broken.example": {"auth": "%%% not base64"},
    "nocolon.example": {"auth": b64("no colon here")},
    "token.example": {"identitytoken": "refresh-me-123"},
}}), source="/x/auth.json").auths


@pytest.mark.parametrize("registry_host, repository, user", [
    ("reg.example", "team/drivers/kmod", "drivers-user"),
    ("reg.example", "team/drivers", "drivers-user"),
    ("reg.example", "team/other", "team-user"),
    ("reg.example", "elsewhere/x", "host-user"),
    ("REG.example", "elsewhere/x", "host-user"),
    ("reg.example:5000", "team/drivers", "port-user"),
    ("legacy.example", "x", "legacy-user"),
    ("docker.io", "library/x", "hub-user"),
    ("registry-1.docker.io", "x", "hub-user"),
    ("reg.example:5001", "x", None),
    ("helper.example", "x", None),
    ("broken.example", "x", None),
    ("nocolon.example", "x", None),
    ("other.example", "team/drivers", None),
])
def test_match_entry(registry_host, repository, user):
    found = match_entry(AUTHS, registry_host, repository)
    assert (found.username if found else None) == user


def test_identity_token_and_secrets():
    found = match_entry(AUTHS, "token.example")
    assert found.identity_token == "refresh-me-123" and not found.has_basic
    assert "port-pass" not in repr(match_entry(AUTHS, "reg.example:5000"))
    assert b64("port-user:port-pass") in match_entry(AUTHS, "reg.example:5000").secrets()


@pytest.mark.parametrize("text", ["[]", '{"auths": []}', "{not json", '{"auths":' * 40 + "{}" + "}" * 40])
def test_malformed_auth_files_are_value_errors(text):
    with pytest.raises(ValueError):
        parse_auth_file(text, source="f")


def test_auth_file_paths_order():
    env = {"REGISTRY_AUTH_FILE": "/etc/auth.json", "XDG_RUNTIME_DIR": "/run/user/7", "DOCKER_CONFIG": "/d"}
    assert auth_file_paths(env, uid=7, home="/home/u") == [
        "/etc/auth.json", "/home/u/.config/containers/auth.json", "/d/config.json"]
    assert auth_file_paths({"XDG_RUNTIME_DIR": "/run/user/7"}, uid=7, home="/home/u") == [
        "/run/user/7/containers/auth.json", "/home/u/.config/containers/auth.json", "/home/u/.docker/config.json"]
    assert auth_file_paths({}, uid=0, home="/root", auth_file="/flag.json")[0] == "/flag.json"
    assert auth_file_paths({}, uid=0, home="/root")[0] == "/run/containers/0/auth.json"


def write_auth(path: Path, host: str, user: str, password: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {host: {"auth": b64(f"{user}:{password}")}}}))
    path.chmod(0o600)
    return path


def test_find_credentials_takes_the_first_file_with_an_entry(tmp_path):
    podman = write_auth(tmp_path / "run/containers/auth.json", "other.example", "p", "p-pass")
    docker = write_auth(tmp_path / "docker/config.json", "reg.example", "d", "d-pass")
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "run"), "DOCKER_CONFIG": str(tmp_path / "docker")}
    search = find_credentials("reg.example", "x", env=env, home=str(tmp_path / "home"))
    assert search.credentials.username == "d" and search.credentials.source == f"{docker} (reg.example)"
    assert search.searched[0] == str(podman)
    assert find_credentials("other.example", env=env, home=str(tmp_path)).credentials.username == "p"
    explicit = find_credentials("reg.example", username="e", password="e-pass", env=env)
    assert explicit.credentials.username == "e"
    none = find_credentials("nowhere.example", env=env, home=str(tmp_path / "home"))
    assert none.credentials is None and str(docker) in none.describe()


def test_unsafe_or_unreadable_auth_files_are_skipped(tmp_path, logs):
    world = write_auth(tmp_path / "world.json", "reg.example", "w", "w-pass")
    world.chmod(0o666)
    assert read_auth_file(str(world)) is None
    foreign = write_auth(tmp_path / "foreign.json", "reg.example", "f", "f-pass")
    if os.getuid() == 0:
        os.chown(foreign, 4242, 4242)
        assert read_auth_file(str(foreign)) is None
    else:
        assert read_auth_file(str(foreign), uid=os.getuid() + 1) is not None  # owned by the caller: fine
    big = tmp_path / "big.json"
    big.write_text(" " * (AUTH_FILE_LIMIT + 1))
    assert read_auth_file(str(big)) is None
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert read_auth_file(str(fifo)) is None  # refused without blocking
    assert read_auth_file(str(tmp_path / "missing.json")) is None
    output = logs()
    assert "every user can write" in output and "FIFO" in output
    assert "w-pass" not in output and "f-pass" not in output


def test_a_credential_helper_is_noted_not_run(tmp_path, logs):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"reg.example": {}}, "credsStore": "desktop"}))
    search = find_credentials("reg.example", env={"DOCKER_CONFIG": str(tmp_path)}, home=str(tmp_path))
    assert search.credentials is None
    assert "credential helper" in logs()


def test_a_malformed_auth_file_falls_through_to_the_next(tmp_path, logs):
    (tmp_path / "first.json").write_text("{broken")
    write_auth(tmp_path / "docker/config.json", "reg.example", "d", "d-pass")
    env = {"REGISTRY_AUTH_FILE": str(tmp_path / "first.json"), "DOCKER_CONFIG": str(tmp_path / "docker")}
    assert find_credentials("reg.example", env=env, home=str(tmp_path)).credentials.username == "d"
    assert "ignoring a registry auth file" in logs()
