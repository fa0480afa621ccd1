"""A small OCI distribution client on the run's one HTTP session: manifests, blobs, tags, and the registries' auth.

It speaks what the CNCF distribution registry, Harbor, Zot, GHCR and ECR speak:

- `GET/HEAD /v2/<name>/manifests/<reference>`, `PUT` to push; `GET/HEAD /v2/<name>/blobs/<digest>`, and the two-step
  monolithic upload (`POST /v2/<name>/blobs/uploads/`, then `PUT <Location>?digest=`); `GET /v2/<name>/tags/list`
  with `Link` pagination.
- Auth on demand: a 401 names its scheme in `WWW-Authenticate`. Bearer: the token endpoint (`realm`) is asked for
  `repository:<name>:pull` (or `pull,push`) with the `service`, with Basic credentials when there are some (or a
  refresh token, as an OAuth2 form), and the request is sent again once; the token is kept per scope for the
  client's life, and fetched again once when the registry turns it down (it expired). Basic: the credentials.
  Credentials and tokens only go to the registry's own origin (scheme, host and port): a blob that redirects to
  object storage on another host is fetched without the Authorization header, as is an upload Location elsewhere.
- Manifests are at most MANIFEST_LIMIT bytes; their digest is computed from the bytes received, never taken from
  the registry: a digest reference must match it, and so must a `Docker-Content-Digest` header when one is sent.

Every request goes through the LoaderSession (retries of GET/HEAD on 429/5xx and connection errors, the deadline,
the unreachable-host breaker, TLS with its CA settings, redirects never from https to http) and is counted, here
(`request_count`) and in the session. Failures are HttpFailure (exit 1) naming the redacted URL and what to do;
bytes that do not match their digest are VerificationError (exit 4); malformed references are UsageError (exit 2).
Passwords and tokens are registered with the session's and the output's redaction before they are used.

Which scheme to use is the caller's decision (https, or plain http by explicit opt-in or for loopback).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import re
from typing import IO, Dict, List, NamedTuple, Optional, Set, Tuple, Union
from urllib.parse import quote, urlencode, urljoin, urlsplit

from driver_loader.core.errors import HttpFailure, LoaderError, UsageError, VerificationError
from driver_loader.core.redaction import redact_url
from driver_loader.net.http import LoaderSession, status_text
from driver_loader.net.registry_auth import CREDENTIALS_HINT, Credentials, CredentialSearch, basic_value
from driver_loader.output.log import get_logger
from driver_loader.system.documents import load_json
from driver_loader.system.files import UnreadableFile, open_regular

log = get_logger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)

MANIFEST_LIMIT = 256 * 1024
TOKEN_LIMIT = 256 * 1024  # a token endpoint's JSON answer (ECR's and GHCR's JWTs are a few KiB)
TAGS_PAGE_LIMIT = 1024 * 1024
ERROR_BODY_LIMIT = 64 * 1024
CHALLENGE_LIMIT = 4096
TAGS_PAGE_SIZE = 100
MAX_TAG_PAGES = 100
DEFAULT_TAG_LIMIT = 10_000

PULL = "pull"
PUSH = "pull,push"

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_REGISTRY = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z")
# The distribution spec's error codes: the only words of a registry's error body that are repeated.
_KNOWN_ERROR_CODES = frozenset({
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_UNVERIFIED", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID",
    "TAG_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS",
})
_LINK_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?', re.IGNORECASE)

BlobSource = Union[bytes, str]


class Manifest(NamedTuple):
    """A manifest as received: its bytes, the sha256 digest of those bytes, and its media type (Content-Type)."""

    data: bytes
    digest: str
    media_type: str


class TagList(NamedTuple):
    tags: List[str]
    complete: bool  # False when the count cap or the page cap stopped the listing


@dataclasses.dataclass(frozen=True)
class Challenge:
    """One `WWW-Authenticate` challenge: `scheme` lowercased ("bearer", "basic"), and its parameters."""

    scheme: str
    realm: str = ""
    service: str = ""
    scope: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Optional[Challenge]:
        """A challenge saved with `to_json`; None when the text is not one."""
        try:
            value = load_json(text, max_depth=2)
        except ValueError:
            return None
        if not isinstance(value, dict) or not all(isinstance(value.get(k, ""), str) for k in
                                                  ("scheme", "realm", "service", "scope")):
            return None
        if value.get("scheme") not in ("bearer", "basic"):
            return None
        return cls(scheme=value["scheme"], realm=value.get("realm", ""), service=value.get("service", ""),
                   scope=value.get("scope", ""))


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost (the host of a URL, without brackets or port)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(reference: str) -> bool:
    return bool(_DIGEST.match(reference))


def parse_www_authenticate(value: str) -> List[Challenge]:
    """The challenges of a `WWW-Authenticate` header (`Bearer realm="...",service="...",scope="..."`; several may
    be listed, comma-separated). Unknown parameters are ignored; a header longer than CHALLENGE_LIMIT gives none."""
    if len(value) > CHALLENGE_LIMIT:
        return []
    challenges: List[Challenge] = []
    scheme: Optional[str] = None
    params: Dict[str, str] = {}
    pos, end = 0, len(value)

    def close() -> None:
        if scheme is not None:
            challenges.append(Challenge(scheme=scheme, realm=params.get("realm", ""),
                                        service=params.get("service", ""), scope=params.get("scope", "")))

    token = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*")
    while pos < end:
        if value[pos] in ", \t":
            pos += 1
            continue
        match = token.match(value, pos)
        if match is None:
            break
        name, pos = match.group(1), match.end()
        if pos < end and value[pos] == "=":
            pos += 1
            while pos < end and value[pos] in " \t":
                pos += 1
            if pos < end and value[pos] == '"':
                pos += 1
                chars = []
                while pos < end and value[pos] != '"':
                    if value[pos] == "\\" and pos + 1 < end:
                        pos += 1
                    chars.append(value[pos])
                    pos += 1
                pos += 1
                text = "".join(chars)
            else:
                match = re.compile(r"[^,\s]*").match(value, pos)
                text = match.group(0) if match else ""
                pos = match.end() if match else pos
            if scheme is not None:
                params.setdefault(name.lower(), text)
        else:
            close()
            scheme, params = name.lower(), {}
    close()
    return challenges


class RegistryClient:
    """One repository on one registry. `registry` is host[:port] (an IPv6 host in brackets), `repository` the
    repository path (`falcosecurity/drivers`). `plain_http` uses http:// instead of https:// (the caller decides:
    explicit opt-in or loopback). `credentials`: a CredentialSearch from `registry_auth.find_credentials` (or
    Credentials, or None for anonymous). `challenge`: a challenge saved from an earlier run (`client.challenge`), so
    that the first request already carries a token (token, manifest, blob: three requests for a pull).
    `credentials_hint`: what to tell the operator when the registry refuses."""

    def __init__(self, session: LoaderSession, registry: str, repository: str, *, plain_http: bool = False,
                 credentials: Union[CredentialSearch, Credentials, None] = None,
                 challenge: Optional[Challenge] = None, credentials_hint: str = CREDENTIALS_HINT) -> None:
        if not _REGISTRY.match(registry):
            raise UsageError(f"invalid registry host {registry!r}", hint="write oci://HOST[:PORT]/REPOSITORY")
        if len(repository) > 255 or not _REPOSITORY.match(repository):
            raise UsageError(f"invalid repository name {repository!r}",
                             hint="lowercase letters, digits and . _ - separated components joined by /, "
                                  "at most 255 characters")
        self.session = session
        self.registry = registry
        self.repository = repository
        self.scheme = "http" if plain_http else "https"
        self.base_url = f"{self.scheme}://{registry}/v2/{repository}"
        if isinstance(credentials, Credentials):
            credentials = CredentialSearch(credentials, (credentials.source,))
        self.search = credentials or CredentialSearch(None)
        self.credentials = self.search.credentials
        self.credentials_hint = credentials_hint
        self.challenge: Optional[Challenge] = challenge if challenge and challenge.scheme == "bearer" else None
        self._basic = bool(challenge and challenge.scheme == "basic")
        self._tokens: Dict[str, str] = {}
        self._warned: Set[str] = set()
        self.request_count = 0
        if self.credentials is not None:
            self._remember(self.credentials.secrets())

    # -- reading --------------------------------------------------------------------------------------------------

    def get_manifest(self, reference: str, *, accept: Tuple[str, ...] = MANIFEST_MEDIA_TYPES) -> Manifest:
        """The manifest at `reference` (a tag or a sha256 digest). Raises HttpFailure (status 404: not found),
        VerificationError when the bytes do not hash to the digest asked for or to the registry's own
        Docker-Content-Digest."""
        url = self._manifest_url(reference)
        with self.session.deadline():
            response = self._send("GET", url, PULL, headers={"Accept": ", ".join(accept)})
            with response:
                if response.status_code != 200:
                    raise self._status_failure(response, "fetching the manifest", url)
                data = self._read_limited(response, MANIFEST_LIMIT, "manifest", url)
                media_type = _media_type(response.headers.get("Content-Type", ""))
                claimed = response.headers.get("Docker-Content-Digest", "").strip()
        digest = sha256_digest(data)
        if is_digest(reference) and digest != reference:
            raise VerificationError(
                f"the manifest {redact_url(url)} does not match its digest: asked for {reference}, the bytes "
                f"received hash to {digest}", hint="the registry (or something between) is serving other content; "
                "nothing was used")
        self._check_claimed(claimed, digest, "manifest", url)
        log.debug("manifest", url=redact_url(url), digest=digest, media_type=media_type, size=len(data))
        return Manifest(data, digest, media_type)

    def manifest_digest(self, reference: str, *, accept: Tuple[str, ...] = MANIFEST_MEDIA_TYPES) -> Optional[str]:
        """The digest of the manifest a tag points to, from a HEAD request; None when there is none (404). The
        registry's word, for deciding what to push: to use a manifest, fetch it with get_manifest."""
        url = self._manifest_url(reference)
        with self.session.deadline():
            response = self._send("HEAD", url, PULL, headers={"Accept": ", ".join(accept)})
            with response:
                if response.status_code in (404, 410):
                    return None
                if response.status_code != 200:
                    raise self._status_failure(response, "looking up the manifest", url)
                claimed = response.headers.get("Docker-Content-Digest", "").strip()
            if is_digest(claimed):
                return claimed
            log.debug("no usable Docker-Content-Digest on HEAD; fetching the manifest", url=redact_url(url))
            return self.get_manifest(reference, accept=accept).digest

    def open_blob(self, digest: str, *, max_size: int, expected_size: Optional[int] = None):
        """A 200 response for the blob `digest`, its body not read yet: read it with `session.iter_body`, inside
        the caller's `session.deadline()` block, hashing what arrives and refusing more than `max_size` bytes (the
        Content-Length is checked here). Redirects to another host are followed without the Authorization header.
        Raises HttpFailure (404: not found; a declared size over `max_size`), VerificationError when the declared
        size is not `expected_size`."""
        url = self._blob_url(digest)
        response = self._send("GET", url, PULL)
        if response.status_code != 200:
            with response:
                raise self._status_failure(response, "fetching the blob", url)
        declared = _content_length(response)
        if declared is not None and declared > max_size:
            response.close()
            raise HttpFailure(f"the blob {redact_url(url)} is {declared} bytes, more than the {max_size} allowed",
                              url=redact_url(url), status=200,
                              hint="raise --max-size if this artifact is really that large")
        if declared is not None and expected_size is not None and declared != expected_size:
            response.close()
            raise VerificationError(
                f"the blob {redact_url(url)} is {declared} bytes, but its manifest says {expected_size}",
                hint="the registry is serving other content; nothing was used")
        return response

    def read_blob(self, digest: str, *, max_size: int) -> bytes:
        """A small blob (a config, a signature payload) in memory, checked against its digest."""
        with self.session.deadline():
            response = self.open_blob(digest, max_size=max_size)
            with response:
                data = self._read_limited(response, max_size, "blob", self._blob_url(digest))
        actual = sha256_digest(data)
        if actual != digest:
            raise VerificationError(f"the blob {redact_url(self._blob_url(digest))} does not match its digest: "
                                    f"the bytes received hash to {actual}",
                                    hint="the registry is serving other content; nothing was used")
        return data

    def blob_exists(self, digest: str, *, scope: str = PULL) -> bool:
        url = self._blob_url(digest)
        with self.session.deadline():
            response = self._send("HEAD", url, scope)
            with response:
                if response.status_code == 200:
                    return True
                if response.status_code in (404, 410):
                    return False
                raise self._status_failure(response, "looking up the blob", url)

    def list_tags(self, limit: int = DEFAULT_TAG_LIMIT) -> TagList:
        """The repository's tags, following `Link: <...>; rel="next"`, at most `limit` of them and MAX_TAG_PAGES
        pages (`complete` says whether the list ended). A repository the registry does not know has none."""
        url = f"{self.base_url}/tags/list?{urlencode({'n': min(TAGS_PAGE_SIZE, max(limit, 1))})}"
        tags: List[str] = []
        seen = set()
        with self.session.deadline():
            for _ in range(MAX_TAG_PAGES):
                seen.add(url)
                response = self._send("GET", url, PULL)
                with response:
                    if response.status_code in (404, 410) and not tags:
                        return TagList([], True)
                    if response.status_code != 200:
                        raise self._status_failure(response, "listing the tags", url)
                    body = self._read_limited(response, TAGS_PAGE_LIMIT, "tag list", url)
                    link = response.headers.get("Link", "")
                tags += _tags_of(body, url)
                if len(tags) >= limit:
                    return TagList(tags[:limit], False)
                match = _LINK_NEXT.search(link[:CHALLENGE_LIMIT])
                if not match:
                    return TagList(tags, True)
                url = urljoin(url, match.group(1))
                if not self._same_origin(url):
                    raise HttpFailure("the registry's next-page link points to another host",
                                      url=redact_url(url), status=200)
                if url in seen:
                    return TagList(tags, True)
        log.warning("stopped listing tags: too many pages", pages=MAX_TAG_PAGES, tags=len(tags))
        return TagList(tags, False)

    # -- writing --------------------------------------------------------------------------------------------------

    def push_blob(self, digest: str, data: BlobSource, size: int) -> bool:
        """Upload the blob `digest` of `size` bytes, `data` being the bytes or the path of a regular file; nothing
        is sent when the registry has it already. True when it was uploaded. The registry checks the digest; a
        Docker-Content-Digest that differs is a VerificationError."""
        url = self._blob_url(digest)
        if isinstance(data, bytes) and len(data) != size:
            raise VerificationError(f"blob {digest}: {len(data)} bytes given, {size} announced")
        with self.session.deadline():
            if self.blob_exists(digest, scope=PUSH):
                log.debug("blob already in the registry", url=redact_url(url))
                return False
            start_url = f"{self.base_url}/blobs/uploads/"
            response = self._send("POST", start_url, PUSH, headers={"Content-Length": "0"})
            with response:
                if response.status_code != 202:
                    raise self._status_failure(response, "starting the blob upload", start_url)
                location = response.headers.get("Location", "")
                base = response.url or start_url
            if not location:
                raise HttpFailure("the registry started an upload without a Location", url=redact_url(start_url),
                                  status=202)
            upload_url = self._upload_target(urljoin(base, location), start_url)
            upload_url += ("&" if urlsplit(upload_url).query else "?") + urlencode({"digest": digest})
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            with _body(data, size) as body:
                response = self._send("PUT", upload_url, PUSH, headers=headers, body=body)
            with response:
                if response.status_code not in (201, 204):
                    raise self._status_failure(response, "uploading the blob", upload_url)
                claimed = response.headers.get("Docker-Content-Digest", "").strip()
        self._check_claimed(claimed, digest, "blob", url)
        log.debug("pushed blob", url=redact_url(url), size=size)
        return True

    def push_manifest(self, reference: str, data: bytes, media_type: str) -> str:
        """Put the manifest `data` at `reference` (a tag, or its own digest); returns its digest."""
        url = self._manifest_url(reference)
        if len(data) > MANIFEST_LIMIT:
            raise LoaderError(f"the manifest to push is {len(data)} bytes, more than the {MANIFEST_LIMIT} allowed")
        digest = sha256_digest(data)
        if is_digest(reference) and reference != digest:
            raise VerificationError(f"the manifest to push hashes to {digest}, not to {reference}")
        with self.session.deadline():
            response = self._send("PUT", url, PUSH, headers={"Content-Type": media_type}, body=data)
            with response:
                if response.status_code not in (200, 201, 204):
                    raise self._status_failure(response, "pushing the manifest", url)
                claimed = response.headers.get("Docker-Content-Digest", "").strip()
        self._check_claimed(claimed, digest, "manifest", url)
        log.debug("pushed manifest", url=redact_url(url), digest=digest)
        return digest

    # -- requests and auth ----------------------------------------------------------------------------------------

    def _send(self, method: str, url: str, scope: str, *, headers: Optional[Dict[str, str]] = None,
              body: Union[None, bytes, IO[bytes]] = None):
        """Send with the auth this client has for `scope`; on a 401 from the registry, answer its challenge and send
        once more. Returns the response whatever its status (the caller closes it)."""
        scope_text = f"repository:{self.repository}:{scope}"
        for attempt in (0, 1):
            if attempt == 0 and self.challenge is not None and not self._basic \
                    and self._token_for(scope_text) is None and self._same_origin(url):
                self._token_ahead(self.challenge, scope_text)
            request_headers = dict(headers or {})
            authorization = self._authorization(url, scope_text)
            if authorization:
                request_headers["Authorization"] = authorization
            if body is not None and not isinstance(body, bytes):
                body.seek(0)
            self.request_count += 1
            log.debug("registry request", http_method=method, url=redact_url(url))
            response = self.session.send_request(method, url, headers=request_headers, data=body)
            if response.status_code != 401 or not self._same_origin(response.url or url):
                return response
            challenges = parse_www_authenticate(response.headers.get("WWW-Authenticate", ""))
            if attempt == 1 or (self._basic and authorization):
                with response:
                    raise self._auth_failure(response, url, "the registry refused the credentials"
                                             if self.credentials else "the registry requires credentials")
            bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
            basic = next((c for c in challenges if c.scheme == "basic"), None)
            if bearer is not None:
                response.close()
                self.challenge = bearer
                self._basic = False
                self._tokens[scope_text] = self._fetch_token(bearer, scope_text)
            elif basic is not None and self.credentials is not None and self.credentials.has_basic:
                response.close()
                self._basic = True
                self._warn_if_cleartext(url)
            else:
                with response:
                    raise self._auth_failure(
                        response, url, "the registry requires credentials" if basic is not None or not challenges
                        else "the registry asks for an authentication scheme the loader does not speak")
        raise AssertionError("unreachable")  # pragma: no cover

    def _token_ahead(self, challenge: Challenge, scope_text: str) -> None:
        """A token before the first request, from a challenge already known; if that fails, the request goes
        without one and the registry's own challenge decides."""
        try:
            self._tokens[scope_text] = self._fetch_token(challenge, scope_text)
        except HttpFailure as failure:
            log.debug("no token from the known challenge; asking the registry", error=failure.message)
            self.challenge = None

    def _token_for(self, scope_text: str) -> Optional[str]:
        token = self._tokens.get(scope_text)
        if token is None and scope_text.endswith(f":{PULL}"):
            token = self._tokens.get(scope_text[: -len(PULL)] + PUSH)  # a push token can pull
        return token

    def _authorization(self, url: str, scope_text: str) -> str:
        """The Authorization header for `url`: only for the registry's own origin."""
        if not self._same_origin(url):
            return ""
        if self._basic:
            return f"Basic {basic_value(self.credentials)}" if self.credentials and self.credentials.has_basic \
                else ""
        token = self._token_for(scope_text)
        return f"Bearer {token}" if token else ""

    def _fetch_token(self, challenge: Challenge, scope_text: str) -> str:
        realm = challenge.realm
        parts = urlsplit(realm)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise HttpFailure("the registry's token endpoint (WWW-Authenticate realm) is not an http(s) URL",
                              url=redact_url(self.base_url), status=401)
        if parts.scheme == "http" and self.scheme == "https":
            raise HttpFailure("refusing the registry's token endpoint over plain http: the registry is https",
                              url=redact_url(realm), status=401,
                              hint="the registry's auth configuration is unsafe; fix its token realm")
        credentials = self.credentials
        params = [("scope", scope_text)] + ([("service", challenge.service)] if challenge.service else [])
        headers: Dict[str, str] = {}
        body: Optional[bytes] = None
        if credentials is not None and credentials.identity_token:
            method, url = "POST", realm
            form = params + [("grant_type", "refresh_token"), ("refresh_token", credentials.identity_token),
                             ("client_id", "falco-driver-loader")]
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            method = "GET"
            url = realm + ("&" if parts.query else "?") + urlencode(params)
            if credentials is not None and credentials.has_basic:
                headers["Authorization"] = f"Basic {basic_value(credentials)}"
        if headers.get("Authorization") or body:
            self._warn_if_cleartext(realm)
        self.request_count += 1
        log.debug("registry token request", url=redact_url(realm), scope=scope_text,
                  with_credentials=bool(headers.get("Authorization") or body))
        response = self.session.send_request(method, url, headers=headers, data=body)
        with response:
            if response.status_code in (401, 403):
                raise self._auth_failure(response, realm, "the registry's token endpoint refused the credentials"
                                         if credentials else "the registry's token endpoint requires credentials")
            if response.status_code != 200:
                raise self._status_failure(response, "getting a registry token", realm)
            data = self._read_limited(response, TOKEN_LIMIT, "token answer", realm)
        try:
            document = load_json(data.decode("utf-8"), max_depth=4)
        except (UnicodeDecodeError, ValueError):
            document = None
        token = None
        if isinstance(document, dict):
            token = next((document[k] for k in ("token", "access_token")
                          if isinstance(document.get(k), str) and document[k]), None)
        if not token or any(c.isspace() for c in token):
            raise HttpFailure("the registry's token endpoint answered without a token", url=redact_url(realm),
                              status=200)
        self._remember([token])
        return token

    def _remember(self, values) -> None:
        from driver_loader.output import boundary

        values = [v for v in values if v]
        self.session.remember_values(values)
        boundary.remember(values)

    # -- helpers --------------------------------------------------------------------------------------------------

    def _warn_if_cleartext(self, url: str) -> None:
        host = urlsplit(url).hostname or ""
        if urlsplit(url).scheme == "http" and not is_loopback(host) and host not in self._warned:
            self._warned.add(host)
            log.warning("sending registry credentials over plain http (the registry was configured for it)",
                        url=redact_url(url))

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            return False
        default = 443 if parts.scheme == "https" else 80
        mine = urlsplit(self.base_url)
        return (parts.scheme == mine.scheme and (parts.hostname or "") == (mine.hostname or "")
                and (port or default) == (mine.port or (443 if mine.scheme == "https" else 80)))

    def _upload_target(self, url: str, start_url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https") or (self.scheme == "https" and scheme != "https"):
            raise HttpFailure(f"refusing the upload Location {redact_url(url)}: not an https URL",
                              url=redact_url(start_url), status=202)
        return url

    def _manifest_url(self, reference: str) -> str:
        if not (is_digest(reference) or _TAG.match(reference)):
            raise UsageError(f"invalid tag or digest {reference!r}",
                             hint="a tag is [A-Za-z0-9_][A-Za-z0-9._-]{0,127}; a digest sha256:<64 hex digits>")
        return f"{self.base_url}/manifests/{quote(reference, safe=':')}"

    def _blob_url(self, digest: str) -> str:
        if not is_digest(digest):
            raise UsageError(f"invalid blob digest {digest!r}", hint="a digest is sha256:<64 lowercase hex digits>")
        return f"{self.base_url}/blobs/{digest}"

    def _read_limited(self, response, limit: int, what: str, url: str) -> bytes:
        declared = _content_length(response)
        if declared is not None and declared > limit:
            raise HttpFailure(f"the {what} {redact_url(url)} is {declared} bytes, more than the {limit} allowed",
                              url=redact_url(url), status=response.status_code)
        body = bytearray()
        for chunk in self.session.iter_body(response):
            body += chunk
            if len(body) > limit:
                raise HttpFailure(f"the {what} {redact_url(url)} is larger than the {limit} bytes allowed",
                                  url=redact_url(url), status=response.status_code)
        return bytes(body)

    def _check_claimed(self, claimed: str, digest: str, what: str, url: str) -> None:
        if not claimed:
            return
        if not claimed.startswith("sha256:"):
            log.debug("Docker-Content-Digest with another algorithm; not compared", url=redact_url(url))
            return
        if claimed != digest:
            raise VerificationError(
                f"the registry says the {what} {redact_url(url)} is {_printable(claimed)}, but its bytes hash to "
                f"{digest}", hint="the registry (or something between) is not serving what it claims; nothing was "
                "used")

    def _auth_failure(self, response, url: str, what: str) -> HttpFailure:
        status = response.status_code
        return HttpFailure(
            f"{what} ({status_text(status)}) for {redact_url(url)} with {self.search.describe()}",
            url=redact_url(url), status=status, hint=self.credentials_hint)

    def _status_failure(self, response, what: str, url: str) -> HttpFailure:
        status = response.status_code
        if status in (401, 403) and self._same_origin(response.url or url):
            return self._auth_failure(response, url, f"{what}: access denied" if status == 403
                                      else f"{what}: the registry requires credentials")
        code = _error_code(self.session, response)
        detail = status_text(status) + (f" ({code})" if code else "")
        hint = ""
        if status in (404, 410):
            hint = "check the repository path and tag (or digest)"
        elif status == 429 or status >= 500:
            hint = "the registry is failing or overloaded; try again later, or use another mirror"
        return HttpFailure(f"{what} {redact_url(url)}: {detail}", url=redact_url(url), status=status, hint=hint)


class _body:
    """The upload body: the bytes, or the regular file at a path opened once (seekable, for a retry after a 401)."""

    def __init__(self, data: BlobSource, size: int) -> None:
        self.data = data
        self.size = size
        self.handle: Optional[IO[bytes]] = None

    def __enter__(self) -> Union[bytes, IO[bytes]]:
        if isinstance(self.data, bytes):
            return self.data
        try:
            fd = open_regular(self.data)
        except UnreadableFile as exc:
            raise LoaderError(f"cannot push {exc}") from None
        self.handle = os.fdopen(fd, "rb")
        actual = os.fstat(fd).st_size
        if actual != self.size:
            self.handle.close()
            raise VerificationError(f"cannot push {self.data}: it is {actual} bytes, {self.size} announced")
        return self.handle

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.close()


def _content_length(response) -> Optional[int]:
    value = response.headers.get("Content-Length", "").strip()
    return int(value) if value.isdigit() else None


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()[:255]


def _printable(text: str) -> str:
    text = text[:80]
    return text if all(c.isalnum() or c in ":-_." for c in text) else "an invalid digest"


def _tags_of(body: bytes, url: str) -> List[str]:
    try:
        document = load_json(body.decode("utf-8"), max_depth=4)
    except (UnicodeDecodeError, ValueError):
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("tags") or [], list):
        raise HttpFailure("the registry's tag list is not the JSON the API defines", url=redact_url(url), status=200)
    return [t for t in document.get("tags") or [] if isinstance(t, str) and _TAG.match(t)]


def _error_code(session: LoaderSession, response) -> str:
    """The first error code of a registry's error body, when it is one of the spec's codes."""
    if response.request is not None and response.request.method == "HEAD":
        return ""
    try:
        body = bytearray()
        for chunk in session.iter_body(response):
            body += chunk
            if len(body) > ERROR_BODY_LIMIT:
                return ""
        document = load_json(body.decode("utf-8"), max_depth=8)
    except (HttpFailure, UnicodeDecodeError, ValueError):
        return ""
    errors = document.get("errors") if isinstance(document, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code = errors[0].get("code")
        if isinstance(code, str) and code in _KNOWN_ERROR_CODES:
            return code
    return ""

