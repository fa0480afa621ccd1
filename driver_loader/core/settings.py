"""Settings, resolved once: flags beat FALCOCTL_DRIVER_* and legacy env vars, which beat the config file,
which beats the defaults. Everything downstream receives one immutable Settings object.

This module is pure: the CLI hands it the parsed flags, the environment and the config file's `driver:` section.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import posixpath
import re
from typing import Any, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from driver_loader.core.driver_types import DEFAULT_TYPES, DriverType, parse_driver_types, split_list
from driver_loader.core.errors import UsageError
from driver_loader.core.naming import unsafe_reason
from driver_loader.core.oci import is_oci_reference, parse_oci_repository

DEFAULT_REPO = "https://download.falco.org/driver"
DEFAULT_CONFIG_PATH = "/etc/falcoctl/falcoctl.yaml"
DEFAULT_FALCO_CONFIG_DIR = "/etc/falco"
DEFAULT_DRIVER_NAME = "falco"
# A DKMS build under emulation or on a busy 2-core node takes minutes; the systemd units allow 20 minutes in all.
DEFAULT_BUILD_TIMEOUT = 900.0
# depmod, dkms status/remove: seconds on a quiet host, minutes on a loaded or emulated one.
DEFAULT_TOOL_TIMEOUT = 600.0
# A driver is a few MiB: five minutes is a slow link's worth, and bounds what a hostile mirror can hold one URL for.
DEFAULT_DOWNLOAD_TIMEOUT = 300.0
# Upper bounds that keep a typo from turning into hours of retrying.
MAX_HTTP_RETRIES = 20
MAX_UNLOAD_RETRIES = 1000
MAX_SECONDS = 7 * 24 * 3600.0
ALLOWED_REPO_SCHEMES = ("http", "https", "file")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_ARCH_ALIASES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}


class VerifyPolicy(str, enum.Enum):
    """--verify: `auto` verifies when a checksum exists, `strict` requires one, `off` checks none. Here with the
    settings rather than in core/policy.py, which applies it, so that reading the settings (every command, printenv
    included) does not load the whole policy."""

    AUTO = "auto"
    STRICT = "strict"
    OFF = "off"

    def __str__(self) -> str:
        return self.value


VERIFY_POLICIES = tuple(p.value for p in VerifyPolicy)


@dataclasses.dataclass(frozen=True)
class HttpOptions:
    timeout: float = 60.0
    # Six retries with full-jitter backoff ride out a mirror that turns away a fifth of a fleet's requests
    # (0.2**7 per request) while an outage still fails within about half a minute per URL.
    retries: int = 6
    headers: Tuple[Tuple[str, str], ...] = ()
    insecure: bool = False
    ca_bundle: Optional[str] = None
    max_size: int = 512 * 1024 * 1024
    # The most one download may take, whatever the server does: connecting, retries and their waits, the headers
    # and the whole body (a body trickling a byte a second never trips the per-read `timeout`).
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT


class VerifyOptions(NamedTuple):  # not a frozen dataclass: defined at every start, and ten times cheaper
    policy: VerifyPolicy = VerifyPolicy.AUTO
    sha256: Optional[str] = None
    checksums_file: Optional[str] = None
    # A PEM public key (cosign.pub): when set, an artifact is used only with a valid signature by it.
    key: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class RegistryOptions:
    """How to reach OCI registries: explicit credentials (else the Docker/Podman auth files), the auth file to read,
    and whether plain http may be used for a registry that is not on loopback."""

    username: Optional[str] = None
    password: Optional[str] = dataclasses.field(default=None, repr=False)
    auth_file: Optional[str] = None
    plain_http: bool = False


@dataclasses.dataclass(frozen=True)
class Settings:
    host_root: str = "/"
    kernel_release: Optional[str] = None
    kernel_version: Optional[str] = None
    arch: Optional[str] = None
    driver_types: Tuple[DriverType, ...] = DEFAULT_TYPES
    driver_name: str = DEFAULT_DRIVER_NAME
    driver_version: Optional[str] = None
    repos: Tuple[str, ...] = (DEFAULT_REPO,)
    cache_dir: str = "/root/.falco"
    config_path: str = DEFAULT_CONFIG_PATH
    falco_config_dir: str = DEFAULT_FALCO_CONFIG_DIR
    update_falco: bool = True
    download: bool = True
    compile: bool = True
    version_fallback: bool = True
    http: HttpOptions = HttpOptions()
    verify: VerifyOptions = VerifyOptions()
    registry: RegistryOptions = RegistryOptions()
    unload_retries: int = 5
    persist: bool = False
    dry_run: bool = False
    build_timeout: float = DEFAULT_BUILD_TIMEOUT
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT
    output: str = "text"

    @property
    def kernel_module_name(self) -> str:
        """The name the kernel knows the module by: `-` becomes `_`."""
        return self.driver_name.replace("-", "_")


def normalize_arch(arch: str) -> str:
    try:
        return _ARCH_ALIASES[arch.strip().lower()]
    except KeyError:
        raise UsageError(
            f"unsupported architecture {arch!r}",
            hint="Falco drivers exist for x86_64 (amd64) and aarch64 (arm64)",
        ) from None


def parse_repos(values: Any) -> Tuple[str, ...]:
    repos = tuple(split_list(_as_list(values)))
    for repo in repos:
        if is_oci_reference(repo):
            parse_oci_repository(repo)  # raises a UsageError saying what is wrong with it
            continue
        try:
            parts = urlsplit(repo)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
        except ValueError as exc:
            why = "its port must be a number from 0 to 65535" if "port" in str(exc).lower() else \
                "its host is not a valid name or address"
            raise UsageError(f"repository {repo!r} is not a valid URL: {why}",
                             hint="give --repo as https://host/path, http://host:port/path or file:///path") from None
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_REPO_SCHEMES:
            raise UsageError(
                f"repository {repo!r} is not an http, https, file or oci URL",
                hint="give --repo as https://host/path, http://host/path, file:///path or oci://registry/path",
            )
        if scheme != "file" and not parts.hostname:
            raise UsageError(f"repository {repo!r} has no host", hint="give --repo as https://host/path")
        if scheme == "file" and not parts.path.startswith("/"):
            raise UsageError(f"repository {repo!r} is not an absolute file URL",
                             hint="give a local mirror as file:///absolute/path")
        if "#" in repo:
            raise UsageError(f"repository {repo!r} has a #fragment, which is never sent to a server",
                             hint="remove the '#...' part; a query string (?token=...) is kept on every request")
    return repos


def parse_http_headers(values: Any) -> Tuple[Tuple[str, str], ...]:
    """`Key: Value` entries; FALCOCTL_DRIVER_HTTP_HEADERS separates several with commas."""
    headers = []
    for raw in _as_list(values):
        for entry in raw.split(","):
            if not entry.strip():
                continue
            key, sep, value = entry.partition(":")
            key, value = key.strip(), value.strip()
            if not sep or not key or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", key) or _has_ctl(value):
                raise UsageError(
                    f"malformed HTTP header {entry.strip()!r}",
                    hint="write headers as 'Key: Value', several separated by commas",
                )
            headers.append((key, value))
    return tuple(headers)


def _has_ctl(value: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _seconds(option: str, value: Any) -> float:
    """A positive, finite number of seconds, or a usage error naming the option (or variable, or config key)."""
    if isinstance(value, bool):
        raise UsageError(f"{option} expects a number of seconds, got {value!r}")
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{option} expects a number of seconds, got {value!r}") from None
    if not 0 < seconds < float("inf"):  # also refuses nan, which compares false with everything
        raise UsageError(f"{option} must be a positive, finite number of seconds, got {value!r}")
    if seconds > MAX_SECONDS:  # sockets and timers cannot wait that long; no step of a run should
        raise UsageError(f"{option} must be at most {MAX_SECONDS:g} seconds (a week), got {value!r}")
    return seconds


def _count(option: str, value: Any, *, minimum: int, maximum: Optional[int] = None) -> int:
    """A whole number in [minimum, maximum], or a usage error naming the option."""
    if isinstance(value, bool):
        raise UsageError(f"{option} expects a whole number, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{option} expects a whole number, got {value!r}") from None
    if isinstance(value, float) and number != value:
        raise UsageError(f"{option} expects a whole number, got {value!r}")
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise UsageError(f"{option} must be {bound}, got {value!r}")
    return number


def _pick(*candidates: Tuple[str, Any]) -> Tuple[str, Any]:
    """(name of the source, value) of the first candidate given, as `_first` decides; ("", None) when none is."""
    for name, value in candidates:
        if _first(value) is not None:
            return name, value
    return "", None


class ConfigSection:
    """The `driver:` section of falcoctl.yaml, read with the type each key must have. A value of another type is
    a usage error naming the key and the file; a relative path is taken relative to the file's directory (never
    to the working directory). Keys are case-insensitive; an empty value counts as unset."""

    def __init__(self, section: Optional[Mapping[str, Any]], path: Optional[str] = None) -> None:
        if section is not None and not isinstance(section, Mapping):
            raise UsageError(f"{self._where('driver', path)} must be a mapping",
                             hint="see falcoctl's falcoctl.yaml layout")
        self.path = path
        self._values = {str(k).lower(): v for k, v in (section or {}).items()}
        nested = self._values.get("config")
        if nested is not None and not isinstance(nested, Mapping):
            raise UsageError(f"{self.where('config')} must be a mapping, got {_describe(nested)}",
                             hint="write it as `config: {configdir: /etc/falco, update_falco: true}`")
        self._config = {str(k).lower(): v for k, v in (nested or {}).items()}

    @staticmethod
    def _where(key: str, path: Optional[str]) -> str:
        return f"{key} in {path}" if path else key

    def where(self, key: str) -> str:
        return self._where(f"driver.{key}", self.path)

    def _raw(self, key: str) -> Any:
        nested, _, inner = key.partition(".")
        value = self._config.get(inner) if nested == "config" and inner else self._values.get(key)
        return None if value == "" or value == [] else value

    def string(self, key: str) -> Optional[str]:
        value = self._raw(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise UsageError(f"{self.where(key)} must be a string, got {_describe(value)}",
                             hint="quote the value in the YAML file, e.g. version: \"8.0.0+driver\"")
        return value

    def strings(self, key: str) -> Optional[list]:
        value = self._raw(key)
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise UsageError(f"{self.where(key)} must be a string or a list of strings, got {_describe(value)}",
                             hint=f"write it as `{key}: [a, b]` or `{key}: a`")
        return items

    def boolean(self, key: str) -> Optional[bool]:
        value = self._raw(key)
        if value is None:
            return None
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLEAN_WORDS:
            return _BOOLEAN_WORDS[value.strip().lower()]
        raise UsageError(f"{self.where(key)} must be true or false, got {_describe(value)}")

    def path_value(self, key: str) -> Optional[str]:
        value = self.string(key)
        if value is None:
            return None
        if "\x00" in value:
            raise UsageError(f"{self.where(key)} contains a NUL character")
        if posixpath.isabs(value):
            return value
        if not self.path or not posixpath.isabs(self.path):
            raise UsageError(f"{self.where(key)} must be an absolute path, got {value!r}")
        return posixpath.normpath(posixpath.join(posixpath.dirname(self.path), value))


_BOOLEAN_WORDS = {"true": True, "yes": True, "y": True, "on": True, "1": True,
                  "false": False, "no": False, "n": False, "off": False, "0": False}


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "a mapping",
            str: "a string"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} ({text[:60] + '...' if len(text) > 60 else text})"


def _first(*candidates: Any) -> Any:
    """The first candidate that is given: not None, and not an empty string (empty env counts as unset)."""
    for value in candidates:
        if value is None:
            continue
        if isinstance(value, str) and value == "":
            continue
        if isinstance(value, (list, tuple)) and not value:
            continue
        return value
    return None


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "y", "on")


def resolve_settings(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    config: Optional[Mapping[str, Any]],
    *,
    home: str = "/root",
    config_path: Optional[str] = None,
) -> Settings:
    """Merge the sources. `flags` holds only options the user gave (None or absent means not given);
    `config` is the `driver:` section of falcoctl.yaml (`config_path`, absolute, names the file in messages and
    anchors its relative paths). A value of the wrong type or out of range is a UsageError naming where it came
    from: the option, the variable or the config key."""
    cfg = config if isinstance(config, ConfigSection) else ConfigSection(config, config_path)

    root_source, host_root = _pick(
        ("--host-root", flags.get("host_root")), ("FALCOCTL_DRIVER_HOSTROOT", env.get("FALCOCTL_DRIVER_HOSTROOT")),
        ("HOST_ROOT", env.get("HOST_ROOT")), (cfg.where("hostroot"), cfg.path_value("hostroot")))
    host_root = str(host_root) if host_root is not None else "/"
    if not posixpath.isabs(host_root) or "\x00" in host_root:
        raise UsageError(
            f"host root ({root_source}) must be an absolute path, got {host_root!r}",
            hint="set --host-root (or HOST_ROOT) to where the host's / is mounted, e.g. /host",
        )
    host_root = posixpath.normpath(host_root)
    if host_root.startswith("//"):
        host_root = "/" + host_root.lstrip("/")

    legacy_type = "ebpf" if "FALCO_BPF_PROBE" in env else None
    types = _first(flags.get("driver_types"), env.get("FALCOCTL_DRIVER_TYPE"), legacy_type, cfg.strings("type"))
    driver_types = parse_driver_types(_as_list(types)) if types is not None else DEFAULT_TYPES

    name_source, name = _pick(("--name", flags.get("driver_name")), ("FALCOCTL_DRIVER_NAME",
                              env.get("FALCOCTL_DRIVER_NAME")), ("DRIVER_NAME", env.get("DRIVER_NAME")),
                              (cfg.where("name"), cfg.string("name")))
    name = str(name) if name is not None else DEFAULT_DRIVER_NAME
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        raise UsageError(
            f"invalid driver name {name!r}" + (f" ({name_source})" if name_source else ""),
            hint="a driver name is letters, digits, '-' and '_' (default: falco)",
        )

    version_source, version = _pick(
        ("--driver-version", flags.get("driver_version")), ("FALCOCTL_DRIVER_VERSION",
                                                            env.get("FALCOCTL_DRIVER_VERSION")),
        ("DRIVER_VERSION", env.get("DRIVER_VERSION")), (cfg.where("version"), cfg.string("version")))
    version = str(version).strip() if version is not None else None
    if version:
        reason = unsafe_reason("driver version", version)
        if reason:
            raise UsageError(f"{reason} ({version_source})", hint="driver versions look like 8.0.0+driver")

    repos_raw = _first(flags.get("repos"), env.get("FALCOCTL_DRIVER_REPOS"), env.get("DRIVERS_REPO"),
                       cfg.strings("repos"))
    repos = parse_repos(repos_raw) if repos_raw is not None else ()
    repos = repos or (DEFAULT_REPO,)

    arch_raw = _first(flags.get("arch"))
    arch = normalize_arch(arch_raw) if arch_raw is not None else None

    headers = parse_http_headers(_first(flags.get("http_headers"), env.get("FALCOCTL_DRIVER_HTTP_HEADERS")))
    insecure_raw = _first(flags.get("http_insecure"), env.get("DRIVER_INSECURE_DOWNLOAD") and True)
    ca_bundle = _first(flags.get("ca_bundle"), env.get("REQUESTS_CA_BUNDLE"), env.get("SSL_CERT_FILE"))
    download_source, download_timeout = _pick(
        ("--download-timeout", flags.get("download_timeout")),
        ("FALCOCTL_DRIVER_DOWNLOAD_TIMEOUT", env.get("FALCOCTL_DRIVER_DOWNLOAD_TIMEOUT")))
    http = HttpOptions(
        timeout=_seconds("--http-timeout", _first(flags.get("http_timeout"), HttpOptions.timeout)),
        retries=_count("--http-retries", _first(flags.get("http_retries"), HttpOptions.retries), minimum=0,
                       maximum=MAX_HTTP_RETRIES),
        headers=headers,
        insecure=bool(insecure_raw) if insecure_raw is not None else False,
        ca_bundle=ca_bundle,
        max_size=_count("--max-size", _first(flags.get("max_size"), HttpOptions.max_size), minimum=1),
        download_timeout=_seconds(download_source or "--download-timeout",
                                  _first(download_timeout, DEFAULT_DOWNLOAD_TIMEOUT)),
    )

    policy_word = str(_first(flags.get("verify"), "auto")).lower()
    try:
        policy = VerifyPolicy(policy_word)
    except ValueError:
        raise UsageError(f"unknown --verify policy {policy_word!r}", hint="use auto, strict or off") from None
    sha = _first(flags.get("sha256"))
    if sha is not None and not _SHA256.match(str(sha)):
        raise UsageError(f"--sha256 expects 64 hex digits, got {sha!r}")
    key_source, key = _pick(("--verify-key", flags.get("verify_key")),
                            ("FALCOCTL_DRIVER_VERIFY_KEY", env.get("FALCOCTL_DRIVER_VERIFY_KEY")),
                            (cfg.where("verifykey"), cfg.path_value("verifykey")))
    if key is not None and (not str(key).strip() or "\x00" in str(key)):
        raise UsageError(f"the signature key ({key_source}) must name a PEM public key file, got {key!r}")
    verify = VerifyOptions(policy=policy, sha256=sha.lower() if sha else None,
                           checksums_file=_first(flags.get("checksums")), key=str(key) if key else None)
    registry = _registry_options(flags, env)

    update_source, update_falco = _pick(
        ("--update-falco", flags.get("update_falco")),
        ("FALCOCTL_DRIVER_CONFIG_UPDATE_FALCO", env.get("FALCOCTL_DRIVER_CONFIG_UPDATE_FALCO")),
        (cfg.where("config.update_falco"), cfg.boolean("config.update_falco")))
    falco_config_dir = _first(flags.get("falco_config_dir"), env.get("FALCOCTL_DRIVER_CONFIG_CONFIGDIR"),
                              cfg.path_value("config.configdir"), DEFAULT_FALCO_CONFIG_DIR)

    cache_dir = str(_first(flags.get("cache_dir"), posixpath.join(home, ".falco")))
    if not posixpath.isabs(cache_dir):
        cache_dir = os.path.abspath(cache_dir)

    output = str(_first(flags.get("output"), "text"))
    if output not in ("text", "json"):
        raise UsageError(f"unknown --output {output!r}", hint="use text or json")

    build_source, build_timeout = _pick(("--build-timeout", flags.get("build_timeout")),
                                        ("FALCOCTL_DRIVER_BUILD_TIMEOUT", env.get("FALCOCTL_DRIVER_BUILD_TIMEOUT")))
    tool_source, tool_timeout = _pick(("--tool-timeout", flags.get("tool_timeout")),
                                      ("FALCOCTL_DRIVER_TOOL_TIMEOUT", env.get("FALCOCTL_DRIVER_TOOL_TIMEOUT")))
    return Settings(
        host_root=host_root,
        kernel_release=_first(flags.get("kernel_release"), env.get("DRIVER_KERNEL_RELEASE")),
        kernel_version=_first(flags.get("kernel_version"), env.get("DRIVER_KERNEL_VERSION")),
        arch=arch,
        driver_types=driver_types,
        driver_name=name,
        driver_version=version or None,
        repos=repos,
        cache_dir=posixpath.normpath(cache_dir),
        config_path=str(_first(flags.get("config_path"), config_path, DEFAULT_CONFIG_PATH)),
        falco_config_dir=str(falco_config_dir),
        update_falco=_flag_value(update_source, update_falco) if update_falco is not None else True,
        download=bool(_first(flags.get("download"), True)),
        compile=bool(_first(flags.get("compile"), True)),
        version_fallback=bool(_first(flags.get("version_fallback"), True)),
        http=http,
        verify=verify,
        registry=registry,
        unload_retries=_count("--unload-retries", _first(flags.get("unload_retries"), 5), minimum=0,
                              maximum=MAX_UNLOAD_RETRIES),
        persist=bool(_first(flags.get("persist"), False)),
        dry_run=bool(_first(flags.get("dry_run"), False)),
        build_timeout=_seconds(build_source or "--build-timeout", _first(build_timeout, DEFAULT_BUILD_TIMEOUT)),
        tool_timeout=_seconds(tool_source or "--tool-timeout", _first(tool_timeout, DEFAULT_TOOL_TIMEOUT)),
        output=output,
    )


def _registry_options(flags: Mapping[str, Any], env: Mapping[str, str]) -> RegistryOptions:
    username = _first(flags.get("registry_username"), env.get("FALCOCTL_DRIVER_REGISTRY_USERNAME"))
    password = _first(flags.get("registry_password"), env.get("FALCOCTL_DRIVER_REGISTRY_PASSWORD"))
    if (username is None) != (password is None):
        raise UsageError(
            "registry credentials need both a user name and a password (or token)",
            hint="set --registry-username and FALCOCTL_DRIVER_REGISTRY_PASSWORD together, or neither to use the "
                 "Docker/Podman auth file",
        )
    plain_source, plain = _pick(("--registry-plain-http", flags.get("registry_plain_http")),
                                ("FALCOCTL_DRIVER_REGISTRY_PLAIN_HTTP", env.get("FALCOCTL_DRIVER_REGISTRY_PLAIN_HTTP")))
    return RegistryOptions(
        username=str(username) if username is not None else None,
        password=str(password) if password is not None else None,
        auth_file=_first(flags.get("registry_auth_file"), env.get("REGISTRY_AUTH_FILE")),
        plain_http=_flag_value(plain_source, plain) if plain is not None else False,
    )


def _flag_value(source: str, value: Any) -> bool:
    """A boolean from a flag or a config file (already one), or from a variable's text (true/false, yes/no, 1/0,
    on/off); other text is a usage error naming the variable."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in _BOOLEAN_WORDS:
        raise UsageError(f"{source} must be true or false, got {value!r}")
    return _BOOLEAN_WORDS[word]
