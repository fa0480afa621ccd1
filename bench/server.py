"""A driver repository on 127.0.0.1 for the bench: serves artifacts from files (sendfile, nothing held in memory),
their `.sha256` sidecars, and optionally answers a fixed share of requests with 503 while capping how many
requests it serves at once. It counts every request it answers, by path and status."""

from __future__ import annotations

import collections
import hashlib
import os
import random
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Counter, Dict, Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit

SIDECAR_SUFFIX = ".sha256"
ARTIFACT_SUFFIXES = (".ko", ".o")


def make_artifact(path: str, size: int) -> str:
    """A sparse file of `size` bytes (it reads as zeros and takes no disk space); returns its SHA-256."""
    with open(path, "wb") as handle:
        handle.truncate(size)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


class FailureDeck:
    """Decides which requests get a 503: exactly `failures` of every `deck` requests of each kind (artifact, sidecar,
    other), at shuffled positions. The share is exact for each kind over a run, so what the loader does about the
    failures shows without dice in it, while no client can predict which of its requests will fail."""

    def __init__(self, failures: int, deck: int, seed: int) -> None:
        self._failures, self._deck = failures, deck
        self._rand = random.Random(seed)
        self._cards: Dict[str, list] = {}
        self._lock = threading.Lock()

    def next_fails(self, kind: str) -> bool:
        with self._lock:
            cards = self._cards.setdefault(kind, [])
            if not cards:
                cards += [True] * self._failures + [False] * (self._deck - self._failures)
                self._rand.shuffle(cards)
            return cards.pop()


class Repository:
    """`artifacts` maps a repository name (the URL's first path segment) to (file, sha256)."""

    def __init__(self, artifacts: Mapping[str, Tuple[str, str]], *, failures: Optional[FailureDeck] = None,
                 max_concurrent: Optional[int] = None, queue_timeout: float = 60.0) -> None:
        self.artifacts = dict(artifacts)
        self.failures = failures
        self.slots = threading.BoundedSemaphore(max_concurrent) if max_concurrent else None
        self.queue_timeout = queue_timeout
        self.counts: Counter = collections.Counter()  # (method, kind, status) -> requests
        self.busiest = 0
        self._busy = 0
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"repository": self})
        self.server = _Server(("127.0.0.1", 0), handler)
        self.server.repository = self
        self.server.daemon_threads = True
        self.server.request_queue_size = 1024
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Repository:
        # ThreadingHTTPServer binds in its constructor, before request_queue_size could be raised: listen again.
        self.server.socket.listen(self.server.request_queue_size)
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def count(self, method: str, kind: str, status: Optional[int] = None) -> int:
        return sum(n for (m, k, s), n in self.counts.items() if m == method and k == kind
                   and (status is None or s == status))

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.busiest = 0

    def record(self, method: str, kind: str, status: int) -> None:
        with self._lock:
            self.counts[(method, kind, status)] += 1

    def enter(self) -> None:
        with self._lock:
            self._busy += 1
            self.busiest = max(self.busiest, self._busy)

    def leave(self) -> None:
        with self._lock:
            self._busy -= 1


class _Server(ThreadingHTTPServer):
    repository: Repository

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up (a loader killed, or closing a kept-alive connection) is counted, not printed."""
        self.repository.record("-", "connection", 0)


class _Handler(BaseHTTPRequestHandler):
    repository: Repository
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        pass  # the counts are the log

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        repo = self.repository
        method = "GET" if body else "HEAD"
        kind, path, digest = self._route()
        if repo.slots is not None and not repo.slots.acquire(timeout=repo.queue_timeout):
            self._status(method, kind, HTTPStatus.SERVICE_UNAVAILABLE)
            return
        repo.enter()
        try:
            if repo.failures is not None and repo.failures.next_fails(kind):
                self._status(method, kind, HTTPStatus.SERVICE_UNAVAILABLE)
            elif kind == "artifact":
                self._send_file(method, path, body)
            elif kind == "sidecar":
                text = f"{digest}  {os.path.basename(urlsplit(self.path).path)[:-len(SIDECAR_SUFFIX)]}\n"
                self._send_bytes(method, kind, text.encode(), body)
            else:
                self._status(method, kind, HTTPStatus.NOT_FOUND)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            repo.leave()
            if repo.slots is not None:
                repo.slots.release()

    def _route(self) -> Tuple[str, str, str]:
        """('artifact' | 'sidecar' | 'other', file, sha256) for the request's path."""
        parts = unquote(urlsplit(self.path).path).lstrip("/").split("/", 1)
        entry = self.repository.artifacts.get(parts[0])
        name = parts[1] if len(parts) > 1 else ""
        if entry is None:
            return "other", "", ""
        if name.endswith(SIDECAR_SUFFIX) and name[:-len(SIDECAR_SUFFIX)].endswith(ARTIFACT_SUFFIXES):
            return "sidecar", entry[0], entry[1]
        if name.endswith(ARTIFACT_SUFFIXES):
            return "artifact", entry[0], entry[1]
        return "other", "", ""

    def _status(self, method: str, kind: str, status: HTTPStatus) -> None:
        self.repository.record(method, kind, int(status))
        self.send_response(status)
        if status == HTTPStatus.SERVICE_UNAVAILABLE:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_bytes(self, method: str, kind: str, data: bytes, body: bool) -> None:
        self.repository.record(method, kind, 200)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _send_file(self, method: str, path: str, body: bool) -> None:
        self.repository.record(method, "artifact", 200)
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if body:
                self.wfile.flush()
                self.connection.sendfile(handle, 0, size)


class HostileMirror:
    """A mirror that does the worst thing a server can do to a loader, by the first segment of the path:

    - `retry-after`: every request answered `503` with `Retry-After: 3600`, and a reason phrase and body that echo the
      request's Authorization header (a credential the loader must not print);
    - `trickle-body`: a 200 whose body (1 MiB announced) arrives one byte a second;
    - `trickle-header`: a status line, then header lines one byte a second, never ending the head;
    - `slow-404`: every answer `404` after `silence` seconds (under the loader's read timeout, so never a timeout),
      except the repository's directory listing, which (as slowly) lists `versions` compatible versions, so that the
      version fallback keeps asking.

    Every loop is bounded: a trickle stops after `limit` seconds and when the mirror is closed."""

    KINDS = ("retry-after", "trickle-body", "trickle-header", "slow-404")

    def __init__(self, *, silence: float, limit: float, versions: int = 50) -> None:
        self.silence = silence
        self.limit = limit
        self.versions = versions
        self.closing = threading.Event()
        self.requests: Counter = collections.Counter()
        handler = type("HostileHandler", (_HostileHandler,), {"mirror": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, kind: str, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}/{kind}"

    def __enter__(self) -> HostileMirror:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


class _HostileHandler(BaseHTTPRequestHandler):
    mirror: HostileMirror
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        pass

    def do_GET(self) -> None:
        mirror = self.mirror
        path = urlsplit(self.path).path
        kind = path.strip("/").split("/", 1)[0]
        mirror.requests[kind] += 1
        try:
            if kind == "retry-after":
                echo = self.headers.get("Authorization", "none")
                body = f"Bad credentials: {echo}\n".encode()
                self.wfile.write(f"HTTP/1.1 503 Bad credentials {echo}\r\nRetry-After: 3600\r\n"
                                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            elif kind == "trickle-body":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
                self._trickle(lambda: b"x")
            elif kind == "trickle-header":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                self._trickle(lambda: b"X-Slow: y\r\n"[self._sent % 11: self._sent % 11 + 1])
            else:
                self._slow_answer(path)
        except OSError:  # the loader hung up (it gave up, or was cut off)
            pass
        self.close_connection = True

    _sent = 0

    def _trickle(self, next_byte) -> None:
        started = time.monotonic()
        while time.monotonic() - started < self.mirror.limit and not self.mirror.closing.is_set():
            self.wfile.write(next_byte())
            self.wfile.flush()
            self._sent += 1
            self.mirror.closing.wait(1.0)

    def _slow_answer(self, path: str) -> None:
        if self.mirror.closing.wait(self.mirror.silence):
            return
        if path.rstrip("/").count("/") == 1 and path.endswith("/"):
            links = "".join(f'<a href="8.{minor}.0%2Bdriver/">8.{minor}.0+driver/</a>\n'
                            for minor in range(1, self.mirror.versions + 1))
            body = f"<html><body>\n{links}</body></html>\n".encode()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            return
        self.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
