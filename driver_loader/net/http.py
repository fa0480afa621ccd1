"""The HTTP edge: one requests Session per run, and the only module that imports requests.

What it guarantees: (connect, read) timeouts on every request; retries with full-jitter exponential backoff on
connection errors, 429 and 5xx (never on 403/404), Retry-After honoured up to a cap; at most five redirects, never
from https to http nor to a non-http(s) URL; TLS verified unless the operator explicitly opts out; proxies from the
environment; `file://` repositories served by an adapter so air-gapped mirrors take the same path as HTTP ones;
credentials redacted from everything this module logs or raises, and a server's own words (its reason phrase, its
body) never repeated.

Time is bounded whatever a server does. Each request, or each `deadline()` block (a download with its checksum
documents), ends within `download_timeout`: a watchdog shuts down the session's sockets at the deadline, so a body
or a header trickling one byte at a time is cut off too. Retries wait at most RETRY_AFTER_CAP each and
RETRY_WAIT_PER_URL in all per deadline. A host that could not be reached, that ran out the deadline, or that still
answered 429/5xx after its retries is not asked again in the run, and the whole run stops starting requests after
RUN_BUDGET_FACTOR x download_timeout.
"""

from __future__ import annotations

import contextlib
import html
import io
import os
import random
import re
import socket
import stat
import threading
import time
import warnings
import weakref
from http import HTTPStatus
from itertools import takewhile
from typing import IO, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import InsecureRequestWarning
from urllib3.util.retry import Retry

from driver_loader import __version__
from driver_loader.core.errors import NOT_FOUND_STATUSES, HttpFailure, InsecureRedirectError
from driver_loader.core.redaction import redact_text, redact_url, secret_values
from driver_loader.core.settings import HttpOptions
from driver_loader.net.http_checks import require_ca_bundle
from driver_loader.output.log import get_logger

log = get_logger(__name__)

MAX_REDIRECTS = 5
CONNECT_TIMEOUT_CAP = 15.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# One wait before a retry, whatever Retry-After asks for; and all the waits of one request (or deadline block).
# With six retries a URL used to be held for six times the cap (three minutes); now one minute at most.
RETRY_AFTER_CAP = 30.0
RETRY_WAIT_PER_URL = 60.0
# The network part of a run stops starting requests after this many download timeouts.
RUN_BUDGET_FACTOR = 2.0
CHUNK_SIZE = 64 * 1024
# Index pages, sidecars and SHA256SUMS are small; a bigger answer is a misconfigured server, not a document.
DOCUMENT_LIMIT = 32 * 1024 * 1024
# A checksum or index document that is forbidden is as absent as one that is missing (S3 answers 403 for
# missing keys when listing is not allowed).
ABSENT_DOCUMENT_STATUSES = NOT_FOUND_STATUSES | {403}
RETRY_STATUSES = frozenset({429} | set(range(500, 600)))
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")

Sleep = Callable[[float], None]
RequestBody = Union[None, bytes, IO[bytes]]


class Deadline:
    """When a request (or a block of them: a download with its checksum documents) must be over, and how much of
    it was spent waiting before retries."""

    def __init__(self, seconds: float, ends: float, *, reason: str) -> None:
        self.seconds = seconds
        self.ends = ends
        self.reason = reason  # which limit `ends` is: the download timeout or the run's budget
        self.waited = 0.0
        self.expired = False

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def passed(self) -> bool:
        return self.expired or self.remaining() <= 0

    def wait_left(self) -> float:
        return max(0.0, min(RETRY_WAIT_PER_URL - self.waited, self.remaining()))


def full_jitter_delay(attempt: int, *, rand: Callable[[], float], base: float = BACKOFF_BASE,
                      cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before retry number `attempt` (1-based): uniform in [0, min(cap, base * 2**(attempt-1))]."""
    if attempt < 1:
        return 0.0
    return rand() * min(cap, base * (2 ** (attempt - 1)))


class JitteredRetry(Retry):
    """urllib3's Retry, with full-jitter backoff, a capped Retry-After and a sleep that tests can replace."""

    def __init__(self, *args, sleep: Sleep = time.sleep, rand: Callable[[], float] = random.random,
                 retry_after_cap: float = RETRY_AFTER_CAP,
                 deadline: Callable[[], Optional[Deadline]] = lambda: None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sleep_function = sleep
        self.rand = rand
        self.retry_after_cap = retry_after_cap
        self.deadline = deadline

    def new(self, **kw) -> JitteredRetry:
        retry = super().new(**kw)
        retry.sleep_function = self.sleep_function
        retry.rand = self.rand
        retry.retry_after_cap = self.retry_after_cap
        retry.deadline = self.deadline
        return retry

    def is_exhausted(self) -> bool:
        """Out of retries, or out of time: the deadline passed or the waiting allowed per URL is spent."""
        if super().is_exhausted():
            return True
        deadline = self.deadline()
        return deadline is not None and (deadline.passed() or deadline.wait_left() <= 0)

    def get_backoff_time(self) -> float:
        consecutive = len(list(takewhile(lambda h: h.redirect_location is None, reversed(self.history))))
        return full_jitter_delay(consecutive, rand=self.rand)

    def get_retry_after(self, response) -> Optional[float]:
        try:
            seconds = super().get_retry_after(response)
        except Exception:  # an unparseable Retry-After falls back to our own backoff
            return None
        if seconds is None:
            return None
        return min(max(float(seconds), 0.0), self.retry_after_cap)

    def sleep(self, response=None) -> None:
        delay = None
        if self.respect_retry_after_header and response is not None:
            delay = self.get_retry_after(response)
        if delay is None:
            delay = self.get_backoff_time()
        deadline = self.deadline()
        if deadline is not None:
            delay = min(delay, deadline.wait_left())
            deadline.waited += delay
        last = self.history[-1] if self.history else None
        reason = (status_text(last.status) if last and last.status else
                  _describe_error(last.error) if last and last.error else "unknown")
        log.info("retrying request", after=reason, attempt=len(self.history), wait_seconds=round(delay, 2))
        if delay > 0:
            self.sleep_function(delay)


class FileAdapter(BaseAdapter):
    """Serves `file://` URLs: files as 200 bodies, directories as an HTML index like `python -m http.server`."""

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        response = requests.Response()
        response.url = request.url
        response.request = request
        response.headers = CaseInsensitiveDict()
        parts = urlsplit(request.url)
        path = unquote(parts.path)
        if request.method not in ("GET", "HEAD"):
            return _file_response(response, 405, "Method Not Allowed")
        if parts.netloc not in ("", "localhost"):
            return _file_response(response, 400, "file URL names a remote host")
        try:
            info = os.stat(path)
            if stat.S_ISDIR(info.st_mode):
                body = _directory_index(path)
                response.headers["Content-Type"] = "text/html; charset=utf-8"
                response.headers["Content-Length"] = str(len(body))
                response.raw = io.BytesIO(body)
            else:
                # Non-blocking, so that a FIFO put where a file belongs cannot hang the open; then only a regular
                # file is served (a FIFO, a device such as /dev/zero or a socket is refused).
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    os.close(fd)
                    return _file_response(response, 403, "Forbidden")
                os.set_blocking(fd, True)
                response.raw = os.fdopen(fd, "rb")
                response.headers["Content-Length"] = str(info.st_size)
        except (FileNotFoundError, NotADirectoryError):
            return _file_response(response, 404, "Not Found")
        except PermissionError:
            return _file_response(response, 403, "Forbidden")
        except OSError as exc:
            raise requests.ConnectionError(f"cannot read {path}: {exc.strerror or exc}") from None
        response.status_code = 200
        response.reason = "OK"
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        """Nothing is pooled."""


def _file_response(response, status: int, reason: str):
    response.status_code = status
    response.reason = reason
    response.raw = io.BytesIO(b"")
    return response


def _directory_index(path: str) -> bytes:
    entries = []
    with os.scandir(path) as it:
        for entry in sorted(it, key=lambda e: e.name):
            suffix = "/" if entry.is_dir() else ""
            href = quote(entry.name, safe="-._~") + suffix
            entries.append(f'<li><a href="{href}">{html.escape(entry.name + suffix)}</a></li>')
    return ("<!DOCTYPE html><html><body><ul>\n" + "\n".join(entries) + "\n</ul></body></html>\n").encode()


class LoaderSession(requests.Session):
    """The run's one Session. Use `get_stream` for artifacts and `get_document` for small text documents."""

    def __init__(self, options: HttpOptions, *, sleep: Sleep = time.sleep,
                 rand: Callable[[], float] = random.random, extra_secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.max_redirects = MAX_REDIRECTS
        self.timeouts = (min(CONNECT_TIMEOUT_CAP, options.timeout), options.timeout)
        self.verify_setting: Union[bool, str] = False if options.insecure else (options.ca_bundle or True)
        self._sleep = sleep
        self._rand = rand
        self.headers["User-Agent"] = f"falco-driver-loader/{__version__}"
        # Content-Length must describe the bytes we hash and store, so ask for no transfer encoding.
        self.headers["Accept-Encoding"] = "identity"
        for key, value in options.headers:
            self.headers[key] = value
        self._secrets = set(secret_values(options.headers, ())) | set(extra_secrets)
        self._documents: Dict[str, Union[Optional[str], HttpFailure]] = {}
        self.request_count = 0  # requests sent (retries of one request count once)
        self._logged_proxies: set = set()
        # Hosts no connection could be made to, after retries, and hosts that ran out a deadline or still answered
        # 429/5xx after their retries: asked again, they fail at once. A node whose network is down (or a hostile
        # mirror) then costs one retry cycle per host, not one per URL.
        self._unreachable: Dict[Tuple[str, Optional[str], Optional[int]], HttpFailure] = {}
        self.retries = options.retries
        self.download_timeout = options.download_timeout
        self._run_ends: Optional[float] = None
        self._deadline: Optional[Deadline] = None
        self._deadline_guard = threading.Lock()
        self._sockets: weakref.WeakSet = weakref.WeakSet()
        retry = JitteredRetry(
            total=options.retries, connect=options.retries, read=options.retries, status=options.retries,
            other=0, redirect=None, backoff_factor=0, status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "HEAD"}), raise_on_status=False, raise_on_redirect=False,
            respect_retry_after_header=True, sleep=sleep, rand=rand, deadline=lambda: self._deadline,
        )
        adapter = _WatchedAdapter(self._watch_socket, max_retries=retry)
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self.mount("file://", FileAdapter())

    def redact(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def remember_secrets(self, urls: Iterable[str]) -> None:
        """Make sure credentials embedded in these URLs are redacted wherever this session reports them."""
        self._secrets.update(secret_values((), urls))

    def remember_values(self, values: Iterable[str]) -> None:
        """Redact these exact values (a password, a token) wherever this session reports them."""
        self._secrets.update(v for v in values if v)

    def pause(self, attempt: int) -> None:
        """Back off before re-trying a transfer that broke after the headers arrived (within the deadline's
        waiting allowance)."""
        delay = full_jitter_delay(attempt, rand=self._rand)
        deadline = self._deadline
        if deadline is not None:
            delay = min(delay, deadline.wait_left())
            deadline.waited += delay
        if delay > 0:
            self._sleep(delay)

    # -- time limits ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def deadline(self) -> Iterator[Deadline]:
        """Everything inside the block (requests, retries, waits, bodies) ends by `download_timeout` from now, or
        by the run's budget, whichever comes first. Nested blocks share the outer deadline."""
        if self._deadline is not None:
            yield self._deadline
            return
        now = time.monotonic()
        if self._run_ends is None:
            self._run_ends = now + RUN_BUDGET_FACTOR * self.download_timeout
        if now + self.download_timeout <= self._run_ends:
            deadline = Deadline(self.download_timeout, now + self.download_timeout, reason="download")
        else:
            deadline = Deadline(self.download_timeout, self._run_ends, reason="run")
        watchdog = threading.Timer(max(0.0, deadline.remaining()), self._cut_off, args=(deadline,))
        watchdog.daemon = True
        with self._deadline_guard:
            self._deadline = deadline
        watchdog.start()
        try:
            yield deadline
        finally:
            watchdog.cancel()
            with self._deadline_guard:
                self._deadline = None

    def _cut_off(self, deadline: Deadline) -> None:
        """The watchdog: at the deadline, shut the session's sockets down, which ends any read in progress."""
        with self._deadline_guard:
            if self._deadline is not deadline:
                return
            deadline.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    def _watch_socket(self, sock: socket.socket) -> None:
        """Every connection's socket, as it connects: the watchdog can then cut it off."""
        self._sockets.add(sock)
        deadline = self._deadline
        if deadline is not None and deadline.passed():
            _shutdown(sock)

    def _deadline_failure(self, url: str, deadline: Deadline, *, while_reading: bool = False) -> HttpFailure:
        if deadline.reason == "run":
            what = (f"stopped: the run's time for the network ({RUN_BUDGET_FACTOR:g} x --download-timeout, "
                    f"{RUN_BUDGET_FACTOR * deadline.seconds:g}s) is spent")
        elif while_reading:
            what = f"cut off after {deadline.seconds:g}s (--download-timeout): the body was still arriving"
        else:
            what = f"no complete answer within {deadline.seconds:g}s (--download-timeout)"
        return HttpFailure(what, url=redact_url(url), hint="the server is too slow or stalls; raise "
                           "--download-timeout for a slow link, or point --repo at another mirror")

    def get_redirect_target(self, resp):
        target = super().get_redirect_target(resp)
        if target is not None:
            # The redirect's own body is never needed: mark it read (requests would read all of it, unbounded).
            resp._content, resp._content_consumed = b"", True
            resp.close()
            destination = urljoin(resp.url, target)
            origin_scheme, scheme = urlsplit(resp.url).scheme, urlsplit(destination).scheme
            # A server may send us elsewhere on the web, never to a local file and never from https to http.
            if scheme not in ("http", "https") or (origin_scheme == "https" and scheme != "https"):
                resp.close()
                raise InsecureRedirectError(
                    f"refusing redirect from {origin_scheme} to {scheme or 'an unknown scheme'}: "
                    f"{redact_url(resp.url)} -> {redact_url(destination)}",
                    url=redact_url(resp.url),
                    hint="point --repo at the final https location, or fix the server's redirect",
                )
        return target

    def get_stream(self, url: str) -> requests.Response:
        """GET `url` without reading the body. Returns a 200 response; anything else raises HttpFailure. Within a
        `deadline()` block the body read with `iter_body` counts against the same deadline; outside one, the
        answer's headers must arrive within download_timeout."""
        self.remember_secrets([url])
        with self.deadline() as deadline:
            response = self._get(url)
        if deadline.expired:  # cut off in the headers: what arrived is not an answer
            response.close()
            failure = self._deadline_failure(url, deadline)
            self._unreachable.setdefault(_host_key(url), failure)
            raise failure
        if response.status_code != 200:
            response.close()
            failure = HttpFailure(status_text(response.status_code), url=redact_url(url),
                                  status=response.status_code)
            if response.status_code in RETRY_STATUSES and self.retries > 0:
                # Still failing after the whole retry cycle (or its waiting allowance): do not ask again.
                self._unreachable[_host_key(response.url or url)] = failure
            raise failure
        return response

    def send_request(self, method: str, url: str, *, headers: Optional[Mapping[str, str]] = None,
                     data: RequestBody = None) -> requests.Response:
        """Any request, under the same rules as `get_stream` (the host's earlier failures, the deadline, the count,
        failures as HttpFailure), but the answer is returned whatever its status: the caller reads it. Only GET and
        HEAD are retried on 429/5xx; a host that still answers so after the retries is not asked again."""
        self.remember_secrets([url])
        with self.deadline() as deadline:
            response = self._request(method, url, headers=headers, data=data)
        if deadline.expired:
            response.close()
            failure = self._deadline_failure(url, deadline)
            self._unreachable.setdefault(_host_key(url), failure)
            raise failure
        if response.status_code in RETRY_STATUSES and method in ("GET", "HEAD") and self.retries > 0:
            self._unreachable[_host_key(response.url or url)] = HttpFailure(
                status_text(response.status_code), url=redact_url(url), status=response.status_code)
        return response

    def iter_body(self, response: requests.Response, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The body in chunks; a transfer that breaks, or outlives the deadline, raises HttpFailure."""
        deadline = self._deadline
        try:
            for chunk in response.iter_content(chunk_size):
                if deadline is not None and deadline.passed():
                    raise self._cut_off_failure(response.url, deadline)
                yield chunk
        except (requests.RequestException, OSError) as exc:
            if deadline is not None and deadline.passed():
                raise self._cut_off_failure(response.url, deadline) from None
            raise self._failure(response.url, exc, while_reading=True) from None
        if deadline is not None and deadline.expired:  # the watchdog's shutdown can look like a clean end
            raise self._cut_off_failure(response.url, deadline)

    def _cut_off_failure(self, url: str, deadline: Deadline) -> HttpFailure:
        failure = self._deadline_failure(url, deadline, while_reading=True)
        self._unreachable.setdefault(_host_key(url), failure)
        return failure

    def get_document(self, url: str, *, limit: int = DOCUMENT_LIMIT) -> Optional[str]:
        """A small text document, fetched at most once per session. None when it does not exist (403/404/410)."""
        if url not in self._documents:
            try:
                self._documents[url] = self._fetch_document(url, limit)
            except HttpFailure as failure:
                self._documents[url] = failure
        outcome = self._documents[url]
        if isinstance(outcome, HttpFailure):
            raise outcome
        return outcome

    def _fetch_document(self, url: str, limit: int) -> Optional[str]:
        with self.deadline():
            return self._read_document(url, limit)

    def _read_document(self, url: str, limit: int) -> Optional[str]:
        try:
            response = self.get_stream(url)
        except HttpFailure as failure:
            if failure.status in ABSENT_DOCUMENT_STATUSES:
                log.debug("document not published", url=redact_url(url), status=failure.status)
                return None
            raise
        with response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise HttpFailure(f"document is {declared} bytes, more than the {limit} allowed",
                                  url=redact_url(url), status=200)
            body = bytearray()
            for chunk in self.iter_body(response):
                body += chunk
                if len(body) > limit:
                    raise HttpFailure(f"document is larger than the {limit} bytes allowed",
                                      url=redact_url(url), status=200)
        return body.decode("utf-8", errors="replace")

    def _get(self, url: str) -> requests.Response:
        return self._request("GET", url)

    def _request(self, method: str, url: str, *, headers: Optional[Mapping[str, str]] = None,
                 data: RequestBody = None) -> requests.Response:
        earlier = self._unreachable.get(_host_key(url))
        if earlier is not None:
            why = "unreachable" if earlier.unreachable else "failing"
            raise HttpFailure(f"{earlier.message} (not asked again: the host was {why} earlier in this run)",
                              url=redact_url(url), unreachable=earlier.unreachable, hint=earlier.hint,
                              status=earlier.status)
        deadline = self._deadline
        if deadline is not None and deadline.passed():
            raise self._deadline_failure(url, deadline)
        self._log_proxy(url)
        self.request_count += 1
        try:
            # A caller's own Authorization header wins over ~/.netrc (an auth callable that changes nothing).
            auth = _keep_request if headers and any(k.lower() == "authorization" for k in headers) else None
            return self.request(method, url, headers=headers, data=data, auth=auth, stream=True,
                                timeout=self.timeouts, verify=self.verify_setting)
        except ValueError:  # a Location that no URL parser accepts (urllib3's LocationParseError is one too)
            raise HttpFailure("invalid URL (a redirect's Location, or the repository URL, cannot be parsed)",
                              url=redact_url(url),
                              hint="fix the server's redirect, or point --repo at the final location") from None
        except (requests.RequestException, OSError) as exc:
            if deadline is not None and deadline.passed():
                failure = self._deadline_failure(url, deadline)
                self._unreachable.setdefault(_host_key(url), failure)
                raise failure from None
            failure = self._failure(url, exc)
            if failure.unreachable:
                # The host that could not be reached: after a redirect, that is the redirect's target.
                request = getattr(exc, "request", None)
                self._unreachable[_host_key(getattr(request, "url", None) or url)] = failure
            raise failure from None

    def _log_proxy(self, url: str) -> None:
        scheme = urlsplit(url).scheme
        if scheme == "file" or not self.trust_env:
            return
        proxies = requests.utils.get_environ_proxies(url)
        proxy = requests.utils.select_proxy(url, proxies) if proxies else None
        key = (scheme, urlsplit(url).hostname, proxy)
        if key not in self._logged_proxies:
            self._logged_proxies.add(key)
            if proxy:
                self.remember_secrets([proxy])
            log.debug("proxy", url=redact_url(url), proxy=redact_url(proxy) if proxy else "none (direct)")

    def _failure(self, url: str, exc: BaseException, *, while_reading: bool = False) -> HttpFailure:
        safe_url = redact_url(url)
        if isinstance(exc, requests.exceptions.SSLError):
            return HttpFailure(
                f"TLS verification failed: {self.redact(_describe_error(exc))}", url=safe_url,
                hint="give the repository's CA with --ca-bundle (or REQUESTS_CA_BUNDLE / SSL_CERT_FILE); "
                     "--http-insecure disables verification and is unsafe",
            )
        if isinstance(exc, requests.TooManyRedirects):
            return HttpFailure(f"more than {MAX_REDIRECTS} redirects", url=safe_url)
        unreachable = False
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            what = f"connection timed out after {self.timeouts[0]:g}s"
            unreachable = True
        elif isinstance(exc, requests.exceptions.ReadTimeout) or "Read timed out" in str(exc):
            what = f"no data for {self.timeouts[1]:g}s"
        elif isinstance(exc, requests.exceptions.InvalidURL):
            what = "invalid URL"
        elif while_reading:
            what = f"transfer interrupted: {_describe_error(exc)}"
        else:
            what = _describe_error(exc)
            unreachable = isinstance(exc, requests.exceptions.ConnectionError)
        return HttpFailure(self.redact(what), url=safe_url, unreachable=unreachable)


def _host_key(url: str) -> Tuple[str, Optional[str], Optional[int]]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme, parts.hostname, port


def _keep_request(request):
    return request


def status_text(status: int) -> str:
    """`HTTP 503 Service Unavailable`: the standard phrase, never the server's own (which may echo anything, a
    credential included)."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _shutdown(sock: socket.socket) -> None:
    """End every read and write on `sock` at once, from another thread (closing would wait for the reader)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedAdapter(HTTPAdapter):
    """HTTPAdapter whose connections report their socket as they connect, so that the session's watchdog can cut
    off a request that outlives its deadline (a read timeout cannot: it restarts with every byte)."""

    def __init__(self, watch: Callable[[socket.socket], None], **kwargs) -> None:
        self._watch = watch
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _watched_pools(self._watch)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if set(manager.pool_classes_by_scheme) == {"http", "https"} and not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _watched_pools(self._watch)
        return manager


def _watched_pools(watch: Callable[[socket.socket], None]) -> dict:
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class WatchedHTTPConnection(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            watch(self.sock)

    class WatchedHTTPSConnection(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            watch(self.sock)

    class WatchedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = WatchedHTTPConnection

    class WatchedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = WatchedHTTPSConnection

    return {"http": WatchedHTTPConnectionPool, "https": WatchedHTTPSConnectionPool}


def _causes(exc: BaseException) -> List[BaseException]:
    """`exc` and everything it wraps (urllib3's `reason`, exceptions in `args`, the cause and context chains),
    outermost first."""
    found: List[BaseException] = []
    pending = [exc]
    while pending and len(found) < 32:
        current = pending.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        reason = getattr(current, "reason", None)
        inner = [reason] if isinstance(reason, BaseException) else []
        inner += [arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException)]
        inner += [e for e in (current.__cause__, current.__context__) if e is not None]
        pending += inner
    return found


def _describe_error(exc: BaseException) -> str:
    """What went wrong, in a few plain words ('connection refused', 'the server closed the connection without
    answering'): never urllib3's nested repr, and never text the server sent."""
    import http.client
    import ssl

    from urllib3 import exceptions as u3

    causes = _causes(exc)
    log.debug("HTTP error detail", error=" <- ".join(type(c).__name__ for c in causes))

    def first(*types: type) -> Optional[BaseException]:
        return next((c for c in causes if isinstance(c, types)), None)

    cert = first(ssl.SSLCertVerificationError)
    if cert is not None:
        detail = getattr(cert, "verify_message", "") or ""
        return f"the server's certificate is not trusted ({detail})" if detail else \
            "the server's certificate is not trusted"
    tls = first(ssl.SSLError)
    if tls is not None:
        code = getattr(tls, "reason", None)
        return f"the TLS handshake failed ({code})" if isinstance(code, str) and code.isupper() else \
            "the TLS handshake failed"
    # urllib3 2 wraps a failed lookup in NameResolutionError; urllib3 1.26 (requests 2.28 takes either) has no such
    # class and leaves the socket.gaierror in the chain.
    if first(getattr(u3, "NameResolutionError", socket.gaierror), socket.gaierror) is not None:
        return "the host name could not be resolved"
    known = (  # most specific first: RemoteDisconnected is also a ConnectionResetError and a BadStatusLine
        (http.client.RemoteDisconnected, "the server closed the connection without answering"),
        (ConnectionRefusedError, "connection refused"),
        (ConnectionResetError, "the connection was reset by the server"),
        (ConnectionAbortedError, "the connection was aborted"),
        (BrokenPipeError, "the server closed the connection while the request was being sent"),
        (http.client.LineTooLong, "the server sent a header line longer than allowed"),
        (http.client.BadStatusLine, "the server's answer is not HTTP (no valid status line)"),
        (http.client.IncompleteRead, "the connection closed before the whole body arrived"),
        (u3.IncompleteRead, "the connection closed before the whole body arrived"),
        (u3.InvalidChunkLength, "the server sent a malformed chunked body"),
        (u3.HeaderParsingError, "the server sent malformed headers"),
        (u3.DecodeError, "the server sent a body that cannot be decoded"),
        (u3.ReadTimeoutError, "the server stopped sending"),
        (u3.ConnectTimeoutError, "the connection timed out"),
        (socket.timeout, "timed out"),
        (http.client.HTTPException, "the server sent an invalid HTTP answer"),
    )
    for kind, words in known:
        if first(kind) is not None:
            return words
    for cause in causes:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
        text = _ERRNO_TEXT.search(str(cause))
        if text:
            strerror = text.group(0).split("] ", 1)[1].strip()
            return strerror[:1].lower() + strerror[1:]
    if first(u3.ProtocolError, requests.exceptions.ChunkedEncodingError) is not None:
        return "the connection broke"
    return "the connection failed"


def build_session(options: HttpOptions, *, sleep: Sleep = time.sleep,
                  rand: Callable[[], float] = random.random, repos: Iterable[str] = ()) -> LoaderSession:
    """The run's Session. `repos` are only used to learn which credentials to redact."""
    require_ca_bundle(options)
    session = LoaderSession(options, sleep=sleep, rand=rand, extra_secrets=secret_values((), repos))
    if options.insecure:
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        log.warning("TLS certificate verification is disabled (--http-insecure); "
                    "a network attacker can substitute the driver")
    elif options.ca_bundle:
        log.debug("using CA bundle", ca_bundle=options.ca_bundle)
    if options.headers:
        log.debug("custom HTTP headers", names=[key for key, _ in options.headers])
    return session
