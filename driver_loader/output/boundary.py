"""The output boundary: everything the loader writes to stdout or stderr goes through one redacting writer.

`main()` wraps sys.stdout and sys.stderr in a `RedactingWriter` for the whole run, so click's echo, the usage
text, error lines, structured logs (text and JSON), tracebacks, progress and anything a library prints all pass
through `redact()`: every known secret (URL userinfo and long query values, credential header values, in any of
their quoted forms) and everything shaped like a credential is replaced by `****`.

Secrets are learned before anything can be printed: from the command line and the environment at start-up,
and from the config file and the HTTP session as they are read (`remember_urls`, `remember_headers`).

With `--log-format json`, the stderr writer also keeps stderr to one JSON object per line: a line that is not
one (a library's warning, say) is wrapped into {"timestamp", "level", "msg"}.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from typing import Callable, Iterable, Iterator, List, Mapping, Optional, Pattern, Sequence, Set, TextIO, Tuple

from driver_loader.core.redaction import (
    redact_patterns,
    secret_values,
    secrets_pattern,
)

_secrets: Set[str] = set()
_pattern: Optional[Pattern[str]] = None
_stale = False
_lock = threading.RLock()  # re-entrant: a signal handler may report while the main thread holds it

# Options and variables whose values are HTTP headers, as `Key: Value` (several separated by commas).
_HEADER_OPTIONS = ("--http-header", "--http-headers")
_HEADER_VARIABLES = ("FALCOCTL_DRIVER_HTTP_HEADERS",)
# Options and variables whose whole value is a secret: registry passwords and tokens, signing key passwords.
_SECRET_OPTIONS = ("--registry-password",)
_SECRET_VARIABLES = ("FALCOCTL_DRIVER_REGISTRY_PASSWORD", "COSIGN_PASSWORD", "FALCOCTL_DRIVER_SIGN_KEY_PASSWORD")


def remember(values: Iterable[str]) -> None:
    """Redact these exact values (and their quoted forms) from everything printed from now on."""
    global _stale
    new = {v for v in values if v} - _secrets
    if new:
        with _lock:
            _secrets.update(new)
            _stale = True


def remember_urls(urls: Iterable[str]) -> None:
    remember(secret_values((), urls))


def remember_headers(headers: Iterable[Tuple[str, str]]) -> None:
    """Credential headers' values are secrets, and so is every other header value the operator gave: the loader
    never needs to print one (logs name the headers, never their values)."""
    pairs = list(headers)
    remember(secret_values(pairs, ()))
    remember(value for _, value in pairs if len(value) >= 8)


def header_pairs(text: str) -> List[Tuple[str, str]]:
    """`Key: Value` entries of a header option or variable, leniently: malformed entries still yield a value."""
    pairs = []
    for entry in text.split(","):
        key, sep, value = entry.partition(":")
        if sep:
            pairs.append((key.strip(), value.strip()))
        elif entry.strip():
            pairs.append(("Authorization", entry.strip()))  # unknown shape: treat the whole entry as a secret
    return pairs


def learn(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Learn the secrets of a command line and an environment before anything is printed: the credentials of
    every URL in them, and the values of HTTP header options and variables."""
    urls: List[str] = []
    headers: List[Tuple[str, str]] = []
    secrets: List[str] = []
    for index, arg in enumerate(argv):
        if "://" in arg:
            urls += _urls_in(arg)
        option, sep, value = arg.partition("=")
        if option in _SECRET_OPTIONS:
            secrets.append(value if sep else argv[index + 1] if index + 1 < len(argv) else "")
        if option in _HEADER_OPTIONS:
            if sep:
                headers += header_pairs(value)
            elif index + 1 < len(argv):
                headers += header_pairs(argv[index + 1])
    for name, value in env.items():
        if "://" in value:
            urls += _urls_in(value)
        if name in _HEADER_VARIABLES:
            headers += header_pairs(value)
        if name in _SECRET_VARIABLES:
            secrets.append(value)
    remember(s for s in secrets if s)
    remember_urls(urls)
    remember_headers(headers)


def _urls_in(text: str) -> List[str]:
    """Each URL of a list written with commas, semicolons or spaces, and the whole text as one."""
    import re

    return [text] + [part for part in re.split(r"[\s,;]+", text) if "://" in part]


def known_secrets() -> Tuple[str, ...]:
    return tuple(sorted(_secrets))


def forget_all() -> None:
    """For tests: start again with no known secrets."""
    global _pattern, _stale
    with _lock:
        _secrets.clear()
        _pattern, _stale = None, False


def redact(text: str) -> str:
    """`text` as it may leave the process."""
    global _pattern, _stale
    if not text:
        return text
    if _stale:
        with _lock:
            _pattern, _stale = secrets_pattern(_secrets), False
    pattern = _pattern
    if pattern is not None:
        from driver_loader.core.redaction import REDACTED

        text = pattern.sub(REDACTED, text)
    return redact_patterns(text)


class OutputClosed(Exception):
    """Whoever reads stdout or stderr went away (`| head`). Not an OSError, so that click leaves it to main()."""


class RedactingWriter:
    """A text stream in front of another: whole lines are redacted before they are written on. A partial line
    waits for its end (or a flush, which progress bars use) so that a secret split over two writes is still seen
    whole. On stderr with JSON logs, every line that is not a JSON object is wrapped into one."""

    def __init__(self, target: TextIO, *, json_lines: Callable[[], bool] = lambda: False) -> None:
        self._target = target
        self._json_lines = json_lines
        self._pending = ""
        self._lock = threading.RLock()

    # -- what click and the logging libraries look at --------------------------------------------------------------

    @property
    def encoding(self) -> str:
        return getattr(self._target, "encoding", None) or "utf-8"

    @property
    def errors(self) -> Optional[str]:
        return getattr(self._target, "errors", None)

    @property
    def closed(self) -> bool:
        return bool(getattr(self._target, "closed", False))

    @property
    def target(self) -> TextIO:
        return self._target

    def isatty(self) -> bool:
        try:
            return self._target.isatty()
        except (AttributeError, ValueError):
            return False

    def fileno(self) -> int:
        return self._target.fileno()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    # -- writing -----------------------------------------------------------------------------------------------------

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._pending += text
            cut = max(self._pending.rfind("\n"), -1 if self._json_mode_now() else self._pending.rfind("\r"))
            if cut >= 0:
                ready, self._pending = self._pending[: cut + 1], self._pending[cut + 1:]
                self._emit(ready)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            if self._pending and not self._json_mode_now():
                ready, self._pending = self._pending, ""
                self._emit(ready)
            try:
                self._target.flush()
            except BrokenPipeError:
                raise OutputClosed("broken pipe") from None
            except (AttributeError, ValueError):
                pass

    def close_pending(self) -> None:
        """Write what is left of an unfinished line (at the end of the run)."""
        with self._lock:
            if self._pending:
                ready, self._pending = self._pending, ""
                self._emit(ready if not self._json_mode_now() else ready + "\n")
            with contextlib.suppress(AttributeError, ValueError, OSError):
                self._target.flush()

    def _json_mode_now(self) -> bool:
        return self._json_lines()

    def _emit(self, text: str) -> None:
        text = redact(text)
        if self._json_mode_now():
            text = "".join(_as_json_line(line) for line in text.splitlines(keepends=True))
        try:
            try:
                self._target.write(text)
            except UnicodeEncodeError:
                self._target.write(text.encode(self.encoding, "backslashreplace").decode(self.encoding, "replace"))
        except BrokenPipeError:
            raise OutputClosed("broken pipe") from None


def _as_json_line(line: str) -> str:
    body = line.rstrip("\r\n")
    if not body.strip():
        return ""
    if body.startswith("{") and body.endswith("}"):
        import json

        try:
            if isinstance(json.loads(body), dict):
                return body + "\n"
        except ValueError:
            pass
    return json_line("warning", body)


def json_line(level: str, message: str, **fields: object) -> str:
    """One JSON log line in the loader's format (keys timestamp, level, msg), for text that bypassed structlog."""
    import json
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    return json.dumps({"timestamp": stamp, "level": level, "msg": message, **fields}) + "\n"


class _Discarded(io.TextIOBase):
    """Stands in for a standard stream the program started without: click 8.1.3 (Debian 12's) writes to a None
    sys.stdout and fails, and so would our log writer on a None sys.stderr."""

    def write(self, text: str) -> int:
        return len(text)


@contextlib.contextmanager
def guarded_streams(json_logs: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """sys.stdout and sys.stderr behind redacting writers for the duration of the block; `json_logs()` says
    whether stderr must be JSON lines (asked at each write: --log-format is parsed after the block starts)."""
    saved = sys.stdout, sys.stderr
    # A closed stream (the program started with >&-) is None; what would have been written there is dropped.
    out = _Discarded() if saved[0] is None else \
        saved[0] if isinstance(saved[0], RedactingWriter) else RedactingWriter(saved[0])
    err = _Discarded() if saved[1] is None else \
        saved[1] if isinstance(saved[1], RedactingWriter) else RedactingWriter(saved[1], json_lines=json_logs)
    sys.stdout, sys.stderr = out, err
    try:
        yield
    finally:
        for writer in (out, err):
            if isinstance(writer, RedactingWriter):
                with contextlib.suppress(Exception):
                    writer.close_pending()
        sys.stdout, sys.stderr = saved
