"""The HTTP edge: one requests Session per run, and the only module that imports requests.

What it guarantees: (connect, read) timeouts on every request; retries with full-jitter exponential backoff on
connection errors, 429 and 5xx (never on 403/404), Retry-After honoured up to a cap; at most five redirects, never
from https to http nor to a non-http(s) URL; TLS verified unless the operator explicitly opts out; proxies from the
environment; `file://` repositories served by an adapter so air-gapped mirrors take the same path as HTTP ones;
credentials redacted from everything this module logs or raises.
"""

from __future__ import annotations

import html
import io
import os
import random
import re
import stat
import time
import warnings
from itertools import takewhile
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple, Union
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
RETRY_AFTER_CAP = 30.0
CHUNK_SIZE = 64 * 1024
# Index pages, sidecars and SHA256SUMS are small; a bigger answer is a misconfigured server, not a document.
DOCUMENT_LIMIT = 32 * 1024 * 1024
# A checksum or index document that is forbidden is as absent as one that is missing (S3 answers 403 for
# missing keys when listing is not allowed).
ABSENT_DOCUMENT_STATUSES = NOT_FOUND_STATUSES | {403}
RETRY_STATUSES = frozenset({429} | set(range(500, 600)))
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")

Sleep = Callable[[float], None]


def full_jitter_delay(attempt: int, *, rand: Callable[[], float], base: float = BACKOFF_BASE,
                      cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before retry number `attempt` (1-based): uniform in [0, min(cap, base * 2**(attempt-1))]."""
    if attempt < 1:
        return 0.0
    return rand() * min(cap, base * (2 ** (attempt - 1)))


class JitteredRetry(Retry):
    """urllib3's Retry, with full-jitter backoff, a capped Retry-After and a sleep that tests can replace."""

    def __init__(self, *args, sleep: Sleep = time.sleep, rand: Callable[[], float] = random.random,
                 retry_after_cap: float = RETRY_AFTER_CAP, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sleep_function = sleep
        self.rand = rand
        self.retry_after_cap = retry_after_cap

    def new(self, **kw) -> JitteredRetry:
        retry = super().new(**kw)
        retry.sleep_function = self.sleep_function
        retry.rand = self.rand
        retry.retry_after_cap = self.retry_after_cap
        return retry

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
        last = self.history[-1] if self.history else None
        reason = (f"HTTP {last.status}" if last and last.status else
                  _describe_error(last.error) if last and last.error else "unknown")
        log.info("retrying request", after=redact_text(reason), attempt=len(self.history),
                 wait_seconds=round(delay, 2))
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
                response.raw = open(path, "rb")  # noqa: SIM115 - closed by Response.close()
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
        self.options = options
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
        self.request_count = 0  # GETs sent (retries of one GET count once)
        self._logged_proxies: set = set()
        # Hosts no connection could be made to, after retries: asked again, they fail at once. A node whose
        # network is down then learns it in one retry cycle per host, not one per URL.
        self._unreachable: Dict[Tuple[str, Optional[str], Optional[int]], HttpFailure] = {}
        retry = JitteredRetry(
            total=options.retries, connect=options.retries, read=options.retries, status=options.retries,
            other=0, redirect=None, backoff_factor=0, status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "HEAD"}), raise_on_status=False, raise_on_redirect=False,
            respect_retry_after_header=True, sleep=sleep, rand=rand,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self.mount("file://", FileAdapter())

    def redact(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def remember_secrets(self, urls: Iterable[str]) -> None:
        """Make sure credentials embedded in these URLs are redacted wherever this session reports them."""
        self._secrets.update(secret_values((), urls))

    def pause(self, attempt: int) -> None:
        """Back off before re-trying a transfer that broke after the headers arrived."""
        delay = full_jitter_delay(attempt, rand=self._rand)
        if delay > 0:
            self._sleep(delay)

    def get_redirect_target(self, resp):
        target = super().get_redirect_target(resp)
        if target is not None:
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
        """GET `url` without reading the body. Returns a 200 response; anything else raises HttpFailure."""
        self.remember_secrets([url])
        response = self._get(url)
        if response.status_code != 200:
            response.close()
            raise HttpFailure(f"HTTP {response.status_code} {response.reason or ''}".strip(),
                              url=redact_url(url), status=response.status_code)
        return response

    def iter_body(self, response: requests.Response, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The body in chunks; a transfer that breaks raises HttpFailure."""
        try:
            yield from response.iter_content(chunk_size)
        except (requests.RequestException, OSError) as exc:
            raise self._failure(response.url, exc, while_reading=True) from None

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
        earlier = self._unreachable.get(_host_key(url))
        if earlier is not None:
            raise HttpFailure(f"{earlier.message} (not asked again: the host was unreachable earlier in this run)",
                              url=redact_url(url), unreachable=True, hint=earlier.hint)
        self._log_proxy(url)
        self.request_count += 1
        try:
            return self.get(url, stream=True, timeout=self.timeouts, verify=self.verify_setting)
        except (requests.RequestException, OSError) as exc:
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


def _describe_error(exc: BaseException) -> str:
    """The innermost cause in a few words (e.g. 'Connection refused'), not urllib3's nested repr."""
    seen = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            current = reason
            continue
        inner = current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        if inner is None:
            break
        current = inner
    text = str(current)
    errno_text = _ERRNO_TEXT.search(text)
    if errno_text:
        return errno_text.group(0).split("] ", 1)[1].strip()
    text = re.sub(r"<[^>]* object at 0x[0-9a-f]+>:?\s*", "", text)
    return text.strip() or type(current).__name__


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
