"""Debian's CNCF distribution registry (`docker-registry`, package docker-registry) for the bench: one instance on a
free port of 127.0.0.1, anonymous, plain http, with its config and storage in a directory of the bench's, its access
log on, and killed when the row ends (or after `limit` seconds, or when the bench process dies).

The access log (combined format, one line per answered request) is how the row counts requests: each loader is
given its own User-Agent, so that every request can be put down to the node that made it."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
from typing import List, NamedTuple, Optional

REGISTRY_BIN = os.environ.get("DOCKER_REGISTRY_BIN", "/usr/bin/docker-registry")
READY_TIMEOUT = 15.0  # seconds for /v2/ to answer after the start

# 127.0.0.1 - - [30/Nov/2026:20:18:34 +0000] "GET /v2/fleet/manifests/TAG HTTP/1.1" 404 164 "" "user agent"
_ACCESS = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) \S+ '
                     r'"[^"]*" "(?P<agent>[^"]*)"')


class Access(NamedTuple):
    method: str
    path: str
    status: int
    agent: str

    @property
    def kind(self) -> str:
        """What was asked for: 'manifest', 'signature manifest' (a cosign `sha256-<hex>.sig` manifest), 'blob',
        'tags', 'upload', 'ping' (/v2/) or 'other'."""
        path = self.path.split("?", 1)[0]
        parts = path.split("/")
        if path in ("/v2/", "/v2"):
            return "ping"
        if "manifests" in parts:
            return "signature manifest" if parts[-1].endswith(".sig") else "manifest"
        if "uploads" in parts:
            return "upload"
        if "blobs" in parts:
            return "blob"
        if "tags" in parts:
            return "tags"
        return "other"


class Registry:
    """`with Registry(directory, limit=...) as registry:`; RuntimeError when the binary is missing or the registry
    does not answer within READY_TIMEOUT."""

    def __init__(self, directory: str, *, limit: float, binary: str = REGISTRY_BIN) -> None:
        self.directory = directory
        self.limit = limit
        self.binary = binary
        self.port = 0
        self.process: Optional[subprocess.Popen] = None
        self._watchdog: Optional[threading.Timer] = None
        self.log_path = os.path.join(directory, "registry.log")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def oci_url(self, repository: str) -> str:
        return f"oci://{self.host}/{repository}"

    def __enter__(self) -> Registry:
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise RuntimeError(f"{self.binary} is missing: the registry fleet row needs Debian's docker-registry "
                               "(apt-get install docker-registry; .ci/apt-packages lists it)")
        os.makedirs(self.directory, exist_ok=True)
        last_log = ""
        for _attempt in range(3):  # another process may take the free port between the probe and the bind
            self.port = _free_port()
            config = os.path.join(self.directory, "config.yml")
            with open(config, "w", encoding="utf-8") as handle:
                handle.write(_config(self.directory, self.port))
            with open(self.log_path, "ab") as log_file:
                self.process = subprocess.Popen([self.binary, "serve", config], stdin=subprocess.DEVNULL,
                                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                                preexec_fn=_die_with_parent())
            self._watchdog = threading.Timer(self.limit, self.kill)
            self._watchdog.daemon = True
            self._watchdog.start()
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline and self.process.poll() is None:
                if _answers(self.host):
                    return self
                time.sleep(0.05)
            self.stop()
            last_log = self._log_tail()
            if "address already in use" not in last_log:
                break
        raise RuntimeError(f"docker-registry did not answer on 127.0.0.1 within {READY_TIMEOUT:g} s; its log: "
                           + (last_log.strip().replace("\n", " | ")[-600:] or "empty"))

    def __exit__(self, *exc) -> None:
        self.stop()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
                self.process.wait(timeout=5)

    def accesses(self, *, settle: float = 0.5, wait: float = 10.0) -> List[Access]:
        """Every request in the access log so far. The registry writes a line after it has answered, so a client
        can be gone before its last line is written: wait until the log has not grown for `settle` seconds (at
        most `wait` seconds)."""
        deadline = time.monotonic() + wait
        size, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            current = os.path.getsize(self.log_path)
            if current != size:
                size, since = current, time.monotonic()
            elif time.monotonic() - since >= settle:
                break
            time.sleep(0.05)
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return [Access(m["method"], m["path"], int(m["status"]), m["agent"])
                    for m in map(_ACCESS.match, handle) if m]

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-4000:]
        except OSError:
            return ""


def _config(directory: str, port: int) -> str:
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {os.path.join(directory, 'storage')}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: bench-only-{port}
  draintimeout: 1s
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(host: str) -> bool:
    try:
        connection = http.client.HTTPConnection(host, timeout=1)
        connection.request("GET", "/v2/")
        status = connection.getresponse().status
        connection.close()
        return status == 200
    except OSError:
        return False


def _die_with_parent():
    """A preexec_fn: in the child, before exec, ask for SIGKILL when the bench process ends, however it ends, so
    that no registry outlives the run. libc is loaded here, in the parent: the child only calls it."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

