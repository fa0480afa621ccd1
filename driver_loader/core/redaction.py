"""Keeping credentials out of everything the loader prints: URL userinfo, query values, credential headers, and
the values of known secrets however they are quoted.

Pure string work, without requests, so that modules which only report URLs do not pay for the HTTP stack. The
process-wide list of known secrets, and the writer every output goes through, live in driver_loader.output.boundary.
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional, Pattern, Tuple
from urllib.parse import quote, unquote, urlsplit, urlunsplit

SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
# Header names that carry credentials by convention (X-Api-Key, Private-Token, X-Auth-Token, X-JFrog-Art-Api, ...).
_SENSITIVE_HEADER_NAME = re.compile(r"auth|token|secret|passw|cookie|session|api-?key|apikey|credential|signature|"
                                    r"art-api|private", re.IGNORECASE)
REDACTED = "****"
# Shorter values are only redacted where they stand in a URL or header: replacing every "abc" in the output would
# garble it without protecting anything.
MIN_SECRET_LENGTH = 4
_MIN_QUERY_SECRET_LENGTH = 8

# scheme://userinfo@ : userinfo runs to the last '@' before the host's end ('/', '?', '#', whitespace or a quote).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s'\"<>\\]*@")
# A query string inside a URL: every value after '=' up to the next '&', '#' or the URL's end.
_URL_QUERY = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>?#\\]*\?)(?P<query>[^\s'\"<>#\\]*)")
_QUERY_VALUE = re.compile(r"(?P<key>[^&=;]*)=(?P<value>[^&;]*?)(?P<tail>[).,\]}]*)(?=&|;|$)")
# Credential headers as they appear in text ("Authorization: Bearer x", "cookie=..."): the rest of the line.
_HEADER_LINE = re.compile(r"(?P<key>\b(?:proxy-)?authorization|\bset-cookie|\bcookie)(?P<sep>\s*[:=]\s*)"
                          r"(?P<value>[^\r\n\"']+)", re.IGNORECASE)
# key=value or key: value pairs whose key names a credential.
_CREDENTIAL_PAIR = re.compile(
    r"(?P<key>\b(?:x-)?(?:api[-_]?key|access[-_]?token|refresh[-_]?token|id[-_]?token|auth[-_]?token|"
    r"private[-_]?token|client[-_]?secret|secret|password|passwd|token|x-amz-signature|x-amz-security-token|"
    r"x-amz-credential|jfrog-art-api))(?P<sep>\s*[:=]\s*\"?)(?P<value>[^\s\"',;&<>)\]}]+)",
    re.IGNORECASE)
# An auth scheme's credential: "Bearer <token>"; "Basic <base64>" and the like when the value looks encoded (a
# digit or one of = + /), so that "basic checks" stays readable; and not when the word after it is a log field
# (`digest path=/root/...`): base64 has '=' only at its end.
_AUTH_SCHEME = re.compile(r"(?P<scheme>\bbearer)(?P<sep>\s+)(?P<value>[A-Za-z0-9\-._~+/=%]{4,})|"
                          r"(?P<scheme2>\b(?:basic|digest|negotiate|token))(?P<sep2>\s+)"
                          r"(?![A-Za-z_][A-Za-z0-9_]*=[^=\s])"
                          r"(?P<value2>(?=[A-Za-z0-9\-._~+/%]*[0-9=+/])[A-Za-z0-9\-._~+/=%]{8,})", re.IGNORECASE)


def is_sensitive_header(name: str) -> bool:
    """Whether a header's value is a credential: Authorization, cookies, and any name that says token, key,
    secret, password, session or signature."""
    return name.lower() in SENSITIVE_HEADERS or bool(_SENSITIVE_HEADER_NAME.search(name))


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


def redact_patterns(text: str) -> str:
    """`text` with everything that has the shape of a credential replaced: URL userinfo, URL query values,
    credential headers, `token=...`-like pairs and the credential after an auth scheme such as `Bearer`."""
    if not text:
        return text
    if "://" in text:
        text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
        if "?" in text:
            text = _URL_QUERY.sub(_redact_query_match, text)
    text = _HEADER_LINE.sub(lambda m: f"{m.group('key')}{m.group('sep')}{REDACTED}", text)
    text = _CREDENTIAL_PAIR.sub(_redact_pair, text)
    return _AUTH_SCHEME.sub(_redact_scheme, text)


def _redact_query_match(match: re.Match) -> str:
    query = _QUERY_VALUE.sub(
        lambda m: f"{m.group('key')}={REDACTED if m.group('value') else ''}{m.group('tail')}", match.group("query"))
    return match.group("head") + query


def _redact_pair(match: re.Match) -> str:
    value = match.group("value")
    if value == REDACTED:
        return match.group(0)
    return match.group(0)[: match.start("value") - match.start(0)] + REDACTED


def _redact_scheme(match: re.Match) -> str:
    group = "value" if match.group("value") is not None else "value2"
    if match.group(group) == REDACTED:
        return match.group(0)
    return match.group(0)[: match.start(group) - match.start(0)] + REDACTED


def secret_variants(secret: str) -> Tuple[str, ...]:
    """The ways `secret` can be written in output: as is, percent-encoded, percent-decoded, escaped for JSON
    (ASCII or not), for Python's repr and Go's strconv.Quote, and HTML-escaped."""
    import html
    import json

    forms = [secret, unquote(secret), quote(secret, safe=""), quote(secret, safe="/:@!$&'()*+,;="),
             json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret)[1:-1],
             html.escape(secret)]
    return tuple(dict.fromkeys(form for form in forms if len(form) >= MIN_SECRET_LENGTH))


def secrets_pattern(secrets: Iterable[str]) -> Optional[Pattern[str]]:
    """One regular expression matching every variant of every secret, longest first; None when there are none."""
    variants = sorted({v for s in secrets if len(s) >= MIN_SECRET_LENGTH for v in secret_variants(s)},
                      key=lambda v: (-len(v), v))
    if not variants:
        return None
    return re.compile("|".join(re.escape(v) for v in variants))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret value (in any of its quoted forms) and every credential-shaped string
    replaced."""
    pattern = secrets_pattern(secrets)
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    return redact_patterns(text)


def secret_values(headers: Iterable[Tuple[str, str]], urls: Iterable[str]) -> Tuple[str, ...]:
    """Values that must never be printed: credential header values (and the credential after an auth scheme
    such as `Bearer`), the user and password of URL userinfo, raw and percent-decoded, and long query values."""
    found: List[str] = []
    for key, value in headers:
        if is_sensitive_header(key) and value:
            found.append(value)
            found.extend(part for part in value.split()[1:] if part)
            found.extend(v for _, sep, v in (p.partition("=") for p in value.split(";")) if sep and v)
    for url in urls:
        found.extend(url_secrets(url))
    return tuple(dict.fromkeys(v for v in (s.strip() for s in found) if len(v) >= MIN_SECRET_LENGTH))


# A user name this long, beside a password, is taken for a token.
_MIN_TOKEN_USER_LENGTH = 12


def url_secrets(url: str) -> List[str]:
    """The credentials a URL carries: its userinfo's password, or the whole userinfo when it has no password (raw
    and percent-decoded; everything up to the last '@' before the path counts, as a URL parser would split it) and
    its long query values."""
    found: List[str] = []
    scheme_end = url.find("://")
    if scheme_end < 0:
        return found
    rest = url[scheme_end + 3:]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo = authority.rpartition("@")[0]
    if userinfo:
        user, colon, password = userinfo.partition(":")
        # `user:password`: the password is the secret. A short user name ("falco", "admin") is redacted where it is
        # part of a URL but not hunted for in free text, where it would mangle every line; a long one is taken for a
        # token (`https://<token>:x-oauth-basic@host`). A lone userinfo (`https://<token>@host`) is a token too.
        parts = [userinfo, password] if colon else [userinfo]
        if colon and len(unquote(user)) >= _MIN_TOKEN_USER_LENGTH:
            parts.append(user)
        for part in parts:
            found.extend(p for p in (part, unquote(part)) if p)
    try:
        query = urlsplit(url).query
    except ValueError:
        query = ""
    for item in query.split("&") if query else ():
        value = item.partition("=")[2]
        if len(value) >= _MIN_QUERY_SECRET_LENGTH:
            found.extend(dict.fromkeys((value, unquote(value))))
    return found
