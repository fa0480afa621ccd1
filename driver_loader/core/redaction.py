"""Keeping credentials out of logs and errors: URL userinfo, query values and sensitive header values.

Pure string work, without requests, so that modules which only report URLs do not pay for the HTTP stack.
"""

from __future__ import annotations

import re
from typing import Iterable, List, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
REDACTED = "****"

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"<>]*@")
_MIN_SECRET_LENGTH = 3


def redact_url(url: str) -> str:
    """The URL without userinfo and without query values, safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{key}={REDACTED}" if sep else key for key, sep, _ in (item.partition("=") for item in parts.query.split("&"))
    ) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with URL userinfo and every known secret value replaced."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= _MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    return text


def secret_values(headers: Iterable[Tuple[str, str]], urls: Iterable[str]) -> Tuple[str, ...]:
    """Values that must never be printed: sensitive header values (and the credential after an auth scheme
    such as `Bearer`), and the user and password of URL userinfo, raw and percent-decoded."""
    found: List[str] = []
    for key, value in headers:
        if key.lower() in SENSITIVE_HEADERS and value:
            found.append(value)
            found.extend(part for part in value.split()[1:] if part)
    for url in urls:
        try:
            userinfo = urlsplit(url).netloc.rpartition("@")[0]
        except ValueError:
            continue
        for part in userinfo.split(":", 1) if userinfo else ():
            found.extend(p for p in (part, unquote(part)) if p)
    return tuple(dict.fromkeys(found))
