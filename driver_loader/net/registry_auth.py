"""Credentials for OCI registries: given explicitly (a flag or an environment variable), or read from the auth files
docker and podman write, in the order podman reads them:

1. the file named by --registry-auth-file or REGISTRY_AUTH_FILE; else `$XDG_RUNTIME_DIR/containers/auth.json`, or
   `/run/containers/<uid>/auth.json` without XDG_RUNTIME_DIR (where `podman login` writes);
2. `$XDG_CONFIG_HOME/containers/auth.json` (default `~/.config/containers/auth.json`);
3. `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`).

The first file with an entry for the registry wins. An entry is found as podman finds it: a key naming the registry
and a repository prefix (`host:port/team/drivers`), most specific first, then the registry itself (`host:port`), then
a docker-style key with a scheme (`https://host/v1/`). `auth` is base64 of `user:password`; `identitytoken` is an
OAuth2 refresh token for the registry's token endpoint. Credential helpers (`credsStore`, `credHelpers`) are not run:
the loader runs no programs named by a file; a debug line says so.

Each file is read with the bounded reader (a regular file, at most AUTH_FILE_LIMIT bytes, JSON nested at most a few
levels). A file that another user could have written is skipped with a warning: a file owned by someone other than
root or the current user, or writable by everyone. The credentials only authenticate; what is pulled is checked by
digest and signature whoever supplied them, so a skipped or broken file costs access, never integrity. Nothing here
logs a secret: the values found are registered with the output boundary before anything else happens to them.

Parsing (`parse_auth_file`, `match_entry`) is pure and separate from reading (`read_auth_file`, `find_credentials`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import stat
from typing import Any, Dict, List, Mapping, Optional, Tuple

from driver_loader.output.log import get_logger
from driver_loader.system.documents import load_json
from driver_loader.system.files import FileTooLarge, UnreadableFile, open_regular, read_fd

log = get_logger(__name__)

AUTH_FILE_LIMIT = 1024 * 1024
_AUTH_FILE_DEPTH = 8
_MAX_ENTRIES = 10_000
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
_DOCKER_HUB_LEGACY_KEY = "https://index.docker.io/v1/"
# What the operator can do when a registry refuses: the flags and variables the CLI reads credentials from.
CREDENTIALS_HINT = ("give credentials with --registry-username and --registry-password (or "
                    "FALCOCTL_DRIVER_REGISTRY_USERNAME and FALCOCTL_DRIVER_REGISTRY_PASSWORD), or log in with "
                    "`podman login` / `docker login`, or name an auth file with --registry-auth-file "
                    "(REGISTRY_AUTH_FILE)")


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What to authenticate with. `password` is a password or a token used as one (Basic, or to the token endpoint);
    `identity_token` an OAuth2 refresh token. `source` says where they came from, for messages (never a value)."""

    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    identity_token: str = dataclasses.field(default="", repr=False)
    source: str = ""

    @property
    def has_basic(self) -> bool:
        return bool(self.username or self.password)

    def secrets(self) -> Tuple[str, ...]:
        """The values to redact: the password, the refresh token and the Basic header's base64."""
        values = [self.password, self.identity_token]
        if self.has_basic:
            values.append(basic_value(self))
        return tuple(v for v in values if v)


@dataclasses.dataclass(frozen=True)
class CredentialSearch:
    """The credentials found (None: anonymous) and every source looked at, in order, for the message when a
    registry refuses."""

    credentials: Optional[Credentials]
    searched: Tuple[str, ...] = ()

    def describe(self) -> str:
        if self.credentials is not None:
            return f"credentials from {self.credentials.source}"
        if not self.searched:
            return "no credentials"
        return "no credentials (looked in " + ", ".join(self.searched) + ")"


def basic_value(credentials: Credentials) -> str:
    """The base64 of `user:password`, as a Basic Authorization header carries it."""
    return base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode("ascii")


# -- pure parsing ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AuthFile:
    """The parts of an auth file the loader uses: `auths` by key, and the credential helpers it names."""

    auths: Mapping[str, Credentials]
    creds_store: str = ""
    cred_helpers: Tuple[str, ...] = ()  # registries that have a helper


def parse_auth_file(text: str, *, source: str) -> AuthFile:
    """The `auths` map of a docker config.json or a containers auth.json. Raises ValueError (with a message that
    quotes nothing from the file) when it is not such a document; entries that cannot be decoded are skipped."""
    try:
        document = load_json(text, max_depth=_AUTH_FILE_DEPTH)
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({_json_problem(exc)})") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    raw_auths = document.get("auths", {})
    if not isinstance(raw_auths, dict):
        raise ValueError('"auths" is not an object')
    auths: Dict[str, Credentials] = {}
    for index, (key, entry) in enumerate(raw_auths.items()):
        if index >= _MAX_ENTRIES:
            break
        if not isinstance(key, str) or not isinstance(entry, dict):
            continue
        credentials = _entry_credentials(entry, source=f"{source} ({key})")
        if credentials is not None:
            auths[key] = credentials
    store = document.get("credsStore")
    helpers = document.get("credHelpers")
    return AuthFile(
        auths=auths,
        creds_store=store if isinstance(store, str) else "",
        cred_helpers=tuple(k for k in helpers if isinstance(k, str))[:_MAX_ENTRIES] if isinstance(helpers, dict)
        else (),
    )


def _json_problem(exc: ValueError) -> str:
    lineno = getattr(exc, "lineno", None)
    return f"line {lineno}" if lineno else "malformed"


def _entry_credentials(entry: Mapping[str, Any], *, source: str) -> Optional[Credentials]:
    username = password = ""
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded.strip():
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            log.debug("skipping an auth file entry whose auth value is not base64 of user:password", source=source)
            return None
        username, colon, password = decoded.partition(":")
        if not colon:
            log.debug("skipping an auth file entry whose auth value is not base64 of user:password", source=source)
            return None
    elif isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        username, password = entry["username"], entry["password"]
    token = entry.get("identitytoken")
    identity_token = token if isinstance(token, str) else ""
    if not (username or password or identity_token):
        return None  # `{}`: the credentials are in a helper
    return Credentials(username=username, password=password, identity_token=identity_token, source=source)


def _strip_scheme(key: str) -> Tuple[str, bool]:
    for scheme in ("https://", "http://"):
        if key.startswith(scheme):
            return key[len(scheme):], True
    return key, False


def match_entry(auths: Mapping[str, Credentials], registry: str, repository: str = "") -> Optional[Credentials]:
    """The entry for `registry` (host[:port]) and `repository`: a key naming a repository prefix, most specific
    first (`host/team/drivers`, then `host/team`), then the registry (`host`); then keys with a scheme, reduced to
    their host (`https://host/v1/`). Docker Hub's names all match its legacy key."""
    registry = registry.lower()
    lowered: Dict[str, Credentials] = {}
    for key, credentials in auths.items():
        lowered.setdefault(key.lower(), credentials)
    parts = [p for p in repository.lower().split("/") if p]
    for end in range(len(parts), 0, -1):
        found = lowered.get(f"{registry}/{'/'.join(parts[:end])}")
        if found is not None:
            return found
    hosts = (registry,) + (_DOCKER_HUB if registry in _DOCKER_HUB else ())
    for name in hosts + ((_DOCKER_HUB_LEGACY_KEY,) if registry in _DOCKER_HUB else ()):
        if name in lowered:
            return lowered[name]
    for key, credentials in lowered.items():
        stripped, had_scheme = _strip_scheme(key)
        if had_scheme and stripped.split("/", 1)[0] in hosts:
            return credentials
    return None


def auth_file_paths(env: Mapping[str, str], *, uid: int, home: str, auth_file: Optional[str] = None) -> List[str]:
    """The auth files to look in, in order (see the module's text)."""
    paths: List[str] = []
    primary = auth_file or env.get("REGISTRY_AUTH_FILE")
    if primary:
        paths.append(primary)
    elif env.get("XDG_RUNTIME_DIR"):
        paths.append(os.path.join(env["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    else:
        paths.append(f"/run/containers/{uid}/auth.json")
    config_home = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    paths.append(os.path.join(config_home, "containers", "auth.json"))
    docker_dir = env.get("DOCKER_CONFIG") or os.path.join(home, ".docker")
    paths.append(os.path.join(docker_dir, "config.json"))
    return list(dict.fromkeys(paths))


# -- reading -----------------------------------------------------------------------------------------------------------

def read_auth_file(path: str, *, uid: Optional[int] = None) -> Optional[str]:
    """The text of the auth file `path`; None when it does not exist or must not be used (a warning says why)."""
    uid = os.getuid() if uid is None else uid
    try:
        fd = open_regular(path)
    except UnreadableFile as exc:
        if exc.missing:
            return None
        log.warning("ignoring a registry auth file", path=path, reason=exc.reason)
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid not in (0, uid):
            log.warning("ignoring a registry auth file owned by another user", path=path, owner_uid=info.st_uid)
            return None
        if info.st_mode & stat.S_IWOTH:
            log.warning("ignoring a registry auth file that every user can write", path=path,
                        mode=oct(stat.S_IMODE(info.st_mode)))
            return None
        if info.st_size > AUTH_FILE_LIMIT:
            raise FileTooLarge(path, AUTH_FILE_LIMIT)
        data = read_fd(fd, AUTH_FILE_LIMIT + 1)
        if len(data) > AUTH_FILE_LIMIT:
            raise FileTooLarge(path, AUTH_FILE_LIMIT)
    except FileTooLarge as exc:
        log.warning("ignoring a registry auth file", path=path, reason=exc.reason)
        return None
    except OSError as exc:
        log.warning("ignoring a registry auth file", path=path, reason=f"cannot be read: {exc.strerror or exc}")
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")


def find_credentials(registry: str, repository: str = "", *, username: Optional[str] = None,
                     password: Optional[str] = None, auth_file: Optional[str] = None,
                     env: Optional[Mapping[str, str]] = None, uid: Optional[int] = None,
                     home: Optional[str] = None) -> CredentialSearch:
    """Credentials for `registry` (host[:port]) and `repository`: the explicit ones when given, else the first auth
    file entry that matches. Every value found is registered with the output boundary at once."""
    from driver_loader.output import boundary

    if username is not None or password is not None:
        credentials = Credentials(username=username or "", password=password or "",
                                  source="the registry username and password given")
        boundary.remember(credentials.secrets())
        return CredentialSearch(credentials, (credentials.source,))
    env = os.environ if env is None else env
    uid = os.getuid() if uid is None else uid
    home = home if home is not None else env.get("HOME") or os.path.expanduser("~")
    searched: List[str] = []
    for path in auth_file_paths(env, uid=uid, home=home, auth_file=auth_file):
        searched.append(path)
        text = read_auth_file(path, uid=uid)
        if text is None:
            continue
        try:
            parsed = parse_auth_file(text, source=path)
        except ValueError as exc:
            log.warning("ignoring a registry auth file", path=path, reason=str(exc))
            continue
        for found in parsed.auths.values():
            boundary.remember(found.secrets())
        matched = match_entry(parsed.auths, registry, repository)
        if matched is not None:
            log.debug("registry credentials", registry=registry, source=matched.source)
            return CredentialSearch(matched, tuple(searched))
        helper = registry.lower() in (k.lower() for k in parsed.cred_helpers)
        if helper or parsed.creds_store:
            log.debug("the auth file names a credential helper, which is not used: give the credentials "
                      "explicitly or in an auth file's auths map", path=path,
                      helper="credHelpers" if helper else "credsStore")
    return CredentialSearch(None, tuple(searched))

