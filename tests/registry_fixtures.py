"""Real OCI registries for tests: Debian's CNCF distribution registry (`docker-registry`, package docker-registry)
on 127.0.0.1, one instance per variant per test session, each with its own temporary config and storage.

Load with `pytest_plugins = ["registry_fixtures"]`. Session fixtures, each a `TestRegistry`:

- `registry`: anonymous, plain http (loopback);
- `auth_registry`: htpasswd Basic auth (user `REGISTRY_USER`, password `REGISTRY_PASSWORD`), plain http;
- `tls_registry`: anonymous, https with a certificate from a CA made at test time (`ca_pem`);
- `token_registry`: Bearer tokens: the registry sends clients to a token server on 127.0.0.1 (a pytest-httpserver
  here) that checks Basic credentials and issues RS256 JWTs the registry verifies, as Harbor or GHCR do.

Use a fresh repository per test (`registry.new_repository()`): the instances are shared. `registry.host` is
`127.0.0.1:PORT`, `registry.oci_url(repo)` is the `oci://` reference, `registry.auth_file(dir)` writes a docker
config.json with its credentials. The binary is looked for at DOCKER_REGISTRY_BIN or /usr/bin/docker-registry; when
missing, the fixture fails (never skips) naming the package.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import itertools
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import List, Optional

import pytest

REGISTRY_BIN = os.environ.get("DOCKER_REGISTRY_BIN", "/usr/bin/docker-registry")
REGISTRY_USER = "fleet-builder"
REGISTRY_PASSWORD = "Reg1stry-Pa55word-x7"
READY_TIMEOUT = 15.0
TOKEN_ISSUER = "falco-driver-loader-test-issuer"
TOKEN_SERVICE = "test-registry"
_repository_numbers = itertools.count(1)


@dataclasses.dataclass
class TestRegistry:
    __test__ = False  # not a test class, despite the name

    host: str
    scheme: str
    directory: Path
    process: subprocess.Popen
    username: Optional[str] = None
    password: Optional[str] = None
    ca_pem: Optional[str] = None
    token_server: Optional[object] = None  # the TokenServer of the token variant

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def oci_url(self, repository: str, reference: str = "") -> str:
        return f"oci://{self.host}/{repository}{reference}"

    def new_repository(self, prefix: str = "drivers") -> str:
        return f"{prefix}/test-{next(_repository_numbers)}"

    def auth_file(self, directory: Path, *, password: Optional[str] = None) -> Path:
        """A docker config.json holding this registry's credentials (or `password` instead)."""
        directory.mkdir(parents=True, exist_ok=True)
        secret = f"{self.username}:{password if password is not None else self.password}"
        path = directory / "config.json"
        path.write_text(json.dumps({"auths": {self.host: {"auth": base64.b64encode(secret.encode()).decode()}}}))
        path.chmod(0o600)
        return path

    def skopeo_args(self, role: str = "") -> List[str]:
        """skopeo's options for this registry (TLS verification and credentials); `role` is "" for inspect,
        "src-" or "dest-" for copy."""
        if self.scheme == "http":
            args = [f"--{role}tls-verify=false"]
        else:
            args = [f"--{role}cert-dir={self.directory / 'skopeo-certs'}"]
        if self.username:
            args.append(f"--{role}creds={self.username}:{self.password}")
        return args

    def log_text(self) -> str:
        try:
            return (self.directory / "registry.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _require(binary: str, package: str) -> str:
    path = binary if os.path.isabs(binary) else shutil.which(binary)
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"{binary} is needed for the registry tests: install the Debian package {package} "
                    "(.ci/apt-packages lists it)", pytrace=False)
    return path


def _die_with_parent():
    """A preexec_fn: in the child, before exec, ask for SIGTERM when the test process ends, however it ends (even
    killed), so that no registry outlives the run. libc is loaded here, in the parent: the child only calls it."""
    import ctypes
    import signal

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(directory: Path, port: int, *, auth: str = "", tls: str = "") -> str:
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {directory / 'storage'}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: test-only-{port}
  draintimeout: 1s
{tls}{auth}"""


def _ready(host: str, ca_pem: Optional[str]) -> bool:
    try:
        if ca_pem:
            context = ssl.create_default_context(cafile=ca_pem)
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(host, timeout=1, context=context)
        else:
            connection = http.client.HTTPConnection(host, timeout=1)
        connection.request("GET", "/v2/")
        status = connection.getresponse().status
        connection.close()
        return status in (200, 401)
    except OSError:
        return False


def start_registry(directory: Path, *, auth: str = "", tls=None, username: Optional[str] = None,
                   password: Optional[str] = None) -> TestRegistry:
    """Start docker-registry on a free port of 127.0.0.1 with a config in `directory`; wait until /v2/ answers."""
    binary = _require(REGISTRY_BIN, "docker-registry")
    directory.mkdir(parents=True, exist_ok=True)
    tls_block = ""
    if tls is not None:
        tls_block = f"  tls:\n    certificate: {tls.server_cert}\n    key: {tls.server_key}\n"
        certs = directory / "skopeo-certs"
        certs.mkdir(exist_ok=True)
        shutil.copy(tls.ca_pem, certs / "ca.crt")
    last_log = ""
    for _attempt in range(3):  # another process may take the free port between the probe and the bind
        port = _free_port()
        config = directory / "config.yml"
        config.write_text(_config(directory, port, auth=auth, tls=tls_block))
        with open(directory / "registry.log", "wb") as log_file:
            process = subprocess.Popen([binary, "serve", str(config)], stdout=log_file, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       preexec_fn=_die_with_parent())
        running = TestRegistry(host=f"127.0.0.1:{port}", scheme="https" if tls else "http", directory=directory,
                               process=process, username=username, password=password,
                               ca_pem=tls.ca_pem if tls else None)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _ready(running.host, running.ca_pem):
                return running
            time.sleep(0.05)
        running.stop()
        last_log = running.log_text()
        if "address already in use" not in last_log:
            break
    pytest.fail(f"docker-registry did not start within {READY_TIMEOUT:g}s; its log:\n{last_log}", pytrace=False)


def _htpasswd(directory: Path, username: str, password: str) -> Path:
    tool = _require("htpasswd", "apache2-utils")
    line = subprocess.run([tool, "-Bbn", username, password], check=True, capture_output=True, text=True).stdout
    path = directory / "htpasswd"
    path.write_text(line.strip() + "\n")
    return path


def _stopped_at_end(running: TestRegistry):
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    yield from _stopped_at_end(start_registry(tmp_path_factory.mktemp("registry-anonymous")))


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory):
    directory = tmp_path_factory.mktemp("registry-basic")
    htpasswd = _htpasswd(directory, REGISTRY_USER, REGISTRY_PASSWORD)
    auth = f"auth:\n  htpasswd:\n    realm: falco-driver-loader-tests\n    path: {htpasswd}\n"
    yield from _stopped_at_end(start_registry(directory, auth=auth, username=REGISTRY_USER,
                                              password=REGISTRY_PASSWORD))


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory):
    from tls_fixtures import make_tls_files

    directory = tmp_path_factory.mktemp("registry-tls")
    tls = make_tls_files(directory / "tls")
    yield from _stopped_at_end(start_registry(directory, tls=tls))


# -- the token variant ---------------------------------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenServer:
    """A token endpoint: GET ?service=&scope=repository:NAME:ACTIONS with Basic credentials gives a JWT (RS256,
    the signing certificate in x5c) granting ACTIONS on NAME. `requests` counts the token requests;
    `lifetime` (seconds) is the tokens' validity."""

    def __init__(self, httpserver, directory: Path, username: str, password: str) -> None:
        self.httpserver = httpserver
        self.key = directory / "token.key"
        self.cert = directory / "token.pem"
        self.username = username
        self.password = password
        self.requests = 0
        self.anonymous_pulls = False  # like a public registry: pull tokens for anyone who asks
        self.lifetime = 300
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                        "-out", str(self.cert), "-days", "2", "-subj", "/CN=falco-driver-loader test token issuer"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode("ascii")
        httpserver.expect_request("/token").respond_with_handler(self._handle)

    @property
    def realm(self) -> str:
        return self.httpserver.url_for("/token")

    def _handle(self, request):
        from werkzeug.wrappers import Response

        self.requests += 1
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        anonymous = self.anonymous_pulls and "Authorization" not in request.headers
        if anonymous and any(not scope.endswith(":pull") for scope in request.args.getlist("scope")):
            return Response('{"details":"anonymous pulls only"}', status=401, content_type="application/json")
        if not anonymous and request.headers.get("Authorization") != expected:
            return Response('{"details":"invalid credentials"}', status=401, content_type="application/json")
        access = []
        for scope in request.args.getlist("scope"):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and name:
                access.append({"type": "repository", "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": TOKEN_ISSUER, "sub": self.username, "aud": request.args.get("service", ""),
                  "exp": now + self.lifetime, "nbf": now - 10, "iat": now,
                  "jti": hashlib.sha256(os.urandom(16)).hexdigest(), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True, capture_output=True).stdout
        token = f"{signing_input}.{_b64url(signature)}"
        return Response(json.dumps({"token": token, "expires_in": self.lifetime}), content_type="application/json")


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory):
    from pytest_httpserver import HTTPServer

    directory = tmp_path_factory.mktemp("registry-token")
    _require("openssl", "openssl")
    token_http = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    token_http.start()
    try:
        server = TokenServer(token_http, directory, REGISTRY_USER, REGISTRY_PASSWORD)
        auth = (f"auth:\n  token:\n    realm: {server.realm}\n    service: {TOKEN_SERVICE}\n"
                f"    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {server.cert}\n")
        running = start_registry(directory, auth=auth, username=REGISTRY_USER, password=REGISTRY_PASSWORD)
        running.token_server = server
        yield from _stopped_at_end(running)
    finally:
        token_http.stop()
