"""Settings, resolved once: flags beat FALCOCTL_DRIVER_* and legacy env vars, which beat the config file,
which beats the defaults. Everything downstream receives one immutable Settings object.

This module is pure: the CLI hands it the parsed flags, the environment and the config file's `driver:` section.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
from typing import Any, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from driver_loader.core.driver_types import DEFAULT_TYPES, DriverType, parse_driver_types, split_list
from driver_loader.core.errors import UsageError
from driver_loader.core.naming import unsafe_reason

DEFAULT_REPO = "https://download.falco.org/driver"
DEFAULT_CONFIG_PATH = "/etc/falcoctl/falcoctl.yaml"
DEFAULT_FALCO_CONFIG_DIR = "/etc/falco"
DEFAULT_DRIVER_NAME = "falco"
# A DKMS build under emulation or on a busy 2-core node takes minutes; the systemd units allow 20 minutes in all.
DEFAULT_BUILD_TIMEOUT = 900.0
# depmod, dkms status/remove: seconds on a quiet host, minutes on a loaded or emulated one.
DEFAULT_TOOL_TIMEOUT = 600.0
ALLOWED_REPO_SCHEMES = ("http", "https", "file")
VERIFY_POLICIES = ("auto", "strict", "off")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_ARCH_ALIASES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}


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


@dataclasses.dataclass(frozen=True)
class VerifyOptions:
    policy: str = "auto"
    sha256: Optional[str] = None
    checksums_file: Optional[str] = None


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
        scheme = urlsplit(repo).scheme.lower()
        if scheme not in ALLOWED_REPO_SCHEMES:
            raise UsageError(
                f"repository {repo!r} is not an http, https or file URL",
                hint="give --repo as https://host/path, http://host/path or file:///path",
            )
        if scheme != "file" and not urlsplit(repo).netloc:
            raise UsageError(f"repository {repo!r} has no host", hint="give --repo as https://host/path")
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
    """A positive, finite number of seconds, or a usage error naming the option."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{option} expects a number of seconds, got {value!r}") from None
    if not 0 < seconds < float("inf"):
        raise UsageError(f"{option} must be a positive, finite number of seconds, got {value!r}")
    return seconds


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
    config: Mapping[str, Any],
    *,
    home: str = "/root",
) -> Settings:
    """Merge the sources. `flags` holds only options the user gave (None or absent means not given);
    `config` is the `driver:` section of falcoctl.yaml, keys lower-cased."""
    cfg = {str(k).lower(): v for k, v in (config or {}).items()}
    cfg_config = {str(k).lower(): v for k, v in (cfg.get("config") or {}).items()} if isinstance(
        cfg.get("config"), Mapping
    ) else {}

    host_root = _first(
        flags.get("host_root"), env.get("FALCOCTL_DRIVER_HOSTROOT"), env.get("HOST_ROOT"), cfg.get("hostroot"), "/"
    )
    host_root = str(host_root)
    if not posixpath.isabs(host_root) or "\x00" in host_root:
        raise UsageError(
            f"host root must be an absolute path, got {host_root!r}",
            hint="set --host-root (or HOST_ROOT) to where the host's / is mounted, e.g. /host",
        )
    host_root = posixpath.normpath(host_root)
    if host_root.startswith("//"):
        host_root = "/" + host_root.lstrip("/")

    legacy_type = "ebpf" if "FALCO_BPF_PROBE" in env else None
    types = _first(flags.get("driver_types"), env.get("FALCOCTL_DRIVER_TYPE"), legacy_type, cfg.get("type"))
    driver_types = parse_driver_types(_as_list(types)) if types is not None else DEFAULT_TYPES

    name = str(_first(flags.get("driver_name"), env.get("FALCOCTL_DRIVER_NAME"), env.get("DRIVER_NAME"),
                      cfg.get("name"), DEFAULT_DRIVER_NAME))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        raise UsageError(
            f"invalid driver name {name!r}",
            hint="a driver name is letters, digits, '-' and '_' (default: falco)",
        )

    version = _first(flags.get("driver_version"), env.get("FALCOCTL_DRIVER_VERSION"), env.get("DRIVER_VERSION"),
                     cfg.get("version"))
    version = str(version).strip() if version is not None else None
    if version:
        reason = unsafe_reason("driver version", version)
        if reason:
            raise UsageError(reason, hint="driver versions look like 8.0.0+driver")

    repos_raw = _first(flags.get("repos"), env.get("FALCOCTL_DRIVER_REPOS"), env.get("DRIVERS_REPO"), cfg.get("repos"))
    repos = parse_repos(repos_raw) if repos_raw is not None else ()
    repos = repos or (DEFAULT_REPO,)

    arch_raw = _first(flags.get("arch"))
    arch = normalize_arch(arch_raw) if arch_raw is not None else None

    headers = parse_http_headers(_first(flags.get("http_headers"), env.get("FALCOCTL_DRIVER_HTTP_HEADERS")))
    insecure_raw = _first(flags.get("http_insecure"), env.get("DRIVER_INSECURE_DOWNLOAD") and True)
    ca_bundle = _first(flags.get("ca_bundle"), env.get("REQUESTS_CA_BUNDLE"), env.get("SSL_CERT_FILE"))
    http = HttpOptions(
        timeout=float(_first(flags.get("http_timeout"), HttpOptions.timeout)),
        retries=int(_first(flags.get("http_retries"), HttpOptions.retries)),
        headers=headers,
        insecure=bool(insecure_raw) if insecure_raw is not None else False,
        ca_bundle=ca_bundle,
        max_size=int(_first(flags.get("max_size"), HttpOptions.max_size)),
    )
    if http.timeout <= 0 or http.retries < 0 or http.max_size <= 0:
        raise UsageError("--http-timeout and --max-size must be positive, --http-retries not negative")

    policy = str(_first(flags.get("verify"), "auto")).lower()
    if policy not in VERIFY_POLICIES:
        raise UsageError(f"unknown --verify policy {policy!r}", hint="use auto, strict or off")
    sha = _first(flags.get("sha256"))
    if sha is not None and not _SHA256.match(str(sha)):
        raise UsageError(f"--sha256 expects 64 hex digits, got {sha!r}")
    verify = VerifyOptions(policy=policy, sha256=sha.lower() if sha else None,
                           checksums_file=_first(flags.get("checksums")))

    update_falco = _first(flags.get("update_falco"), env.get("FALCOCTL_DRIVER_CONFIG_UPDATE_FALCO"),
                          cfg_config.get("update_falco"))
    falco_config_dir = _first(flags.get("falco_config_dir"), env.get("FALCOCTL_DRIVER_CONFIG_CONFIGDIR"),
                              cfg_config.get("configdir"), DEFAULT_FALCO_CONFIG_DIR)

    cache_dir = str(_first(flags.get("cache_dir"), posixpath.join(home, ".falco")))
    if not posixpath.isabs(cache_dir):
        cache_dir = os.path.abspath(cache_dir)

    output = str(_first(flags.get("output"), "text"))
    if output not in ("text", "json"):
        raise UsageError(f"unknown --output {output!r}", hint="use text or json")

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
        config_path=str(_first(flags.get("config_path"), DEFAULT_CONFIG_PATH)),
        falco_config_dir=str(falco_config_dir),
        update_falco=_truthy(update_falco) if update_falco is not None else True,
        download=bool(_first(flags.get("download"), True)),
        compile=bool(_first(flags.get("compile"), True)),
        version_fallback=bool(_first(flags.get("version_fallback"), True)),
        http=http,
        verify=verify,
        unload_retries=int(_first(flags.get("unload_retries"), 5)),
        persist=bool(_first(flags.get("persist"), False)),
        dry_run=bool(_first(flags.get("dry_run"), False)),
        build_timeout=_seconds("--build-timeout", _first(flags.get("build_timeout"),
                               env.get("FALCOCTL_DRIVER_BUILD_TIMEOUT"), DEFAULT_BUILD_TIMEOUT)),
        tool_timeout=_seconds("--tool-timeout", _first(flags.get("tool_timeout"),
                              env.get("FALCOCTL_DRIVER_TOOL_TIMEOUT"), DEFAULT_TOOL_TIMEOUT)),
        output=output,
    )
