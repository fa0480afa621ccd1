"""Helpers for the download-layer tests: a raw socket server for broken transfers, a real Plan for a fixed Ubuntu
host, and a sleep recorder. The fixtures built on them live in download_fixtures.py."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import socket
import threading
from typing import Callable, List, Optional

from driver_loader.core.distros.base import HostFacts
from driver_loader.core.driver_types import DriverType
from driver_loader.core.plan import DriverRequirement, make_plan
from driver_loader.core.settings import HttpOptions, Settings, VerifyOptions

DEFAULT_VERSION = "8.0.0+driver"
FILENAME = "falco_ubuntu-generic_6.8.0-79-generic_79.ko"
ARCH = "x86_64"
FACTS = HostFacts(kernel_release="6.8.0-79-generic", kernel_version="#79-Ubuntu SMP PREEMPT_DYNAMIC", arch=ARCH,
                  os_release={"ID": "ubuntu"}, has_os_release=True)


def artifact_path(version: str = DEFAULT_VERSION, prefix: str = "/driver", filename: str = FILENAME) -> str:
    """The decoded request path a server sees for an artifact (the client sends `+` as %2B)."""
    return f"{prefix}/{version}/{ARCH}/{filename}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_settings(tmp_path, repos, *, policy: str = "auto", sha: Optional[str] = None,
                  checksums_file: Optional[str] = None, fallback: bool = True, **http) -> Settings:
    http.setdefault("timeout", 5.0)
    http.setdefault("retries", 2)
    return Settings(
        repos=tuple(repos),
        cache_dir=str(tmp_path / "cache"),
        version_fallback=fallback,
        http=HttpOptions(**http),
        verify=VerifyOptions(policy=policy, sha256=sha, checksums_file=checksums_file),
    )


def plan_for(settings: Settings, version: str = DEFAULT_VERSION):
    return make_plan(FACTS, settings, DriverType.KMOD, DriverRequirement(version, "test"))


class Sleeps(list):
    """Stands in for time.sleep: records the delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class RawServer:
    """A one-thread-per-connection server that hands each connection, after the request head, to `script`.
    `release` lets a script stall until the test ends."""

    script: Callable[[socket.socket, str], None]
    requests: List[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.release = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._threads: List[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            self.requests.append(request_line)
            with contextlib.suppress(OSError):
                self.script(conn, request_line)

    def close(self) -> None:
        self.release.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)


def response_head(status: str = "200 OK", length: Optional[int] = None, extra: str = "") -> bytes:
    lines = [f"HTTP/1.1 {status}", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def reset(conn: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN."""
    import struct

    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
