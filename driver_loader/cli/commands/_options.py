"""Click options shared by the subcommands, and the one place flags become Settings.

Every option defaults to None so that "not given" is visible: only given flags beat the environment and the
config file (see settings.resolve_settings).
"""

from __future__ import annotations

import os
import pwd
from typing import Any, Callable, Dict, List, Optional

import click

from driver_loader.cli.config_file import load_driver_section
from driver_loader.core.settings import DEFAULT_CONFIG_PATH, HttpOptions, Settings, resolve_settings
from driver_loader.output import log as logging_setup

LOG_FORMATS = click.Choice(["auto", "text", "json", "color"], case_sensitive=False)
LOG_LEVELS = click.Choice(["trace", "debug", "info", "warn", "warning", "error"], case_sensitive=False)


def apply_options(options: list, func: Callable) -> Callable:
    for option in reversed(options):
        func = option(func)
    return func


class SharedOption:
    """One shared click option, defined once: a decorator like `click.option(...)` that also knows its parameter
    name, so a command can take one option of a group (`shared("falco_config_dir")`), with its own help text if the
    flag means something narrower there."""

    def __init__(self, *decls: str, **attrs: Any) -> None:
        self.decls = decls
        self.attrs = attrs

    @property
    def name(self) -> str:
        """The parameter name click gives it: the identifier given, else the first long flag."""
        for decl in self.decls:
            if decl.isidentifier():
                return decl
        first = next(d for d in self.decls if d.startswith("--"))
        return first.split("/", 1)[0][2:].replace("-", "_")

    def with_help(self, text: str) -> SharedOption:
        return SharedOption(*self.decls, **{**self.attrs, "help": text})

    def __call__(self, func: Callable) -> Callable:
        return click.option(*self.decls, **self.attrs)(func)


def _log_format_cb(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    logging_setup.setup(log_format=value)
    return value


def _log_level_cb(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    logging_setup.setup(log_level=value)
    return value


LOG_OPTIONS = [
    SharedOption("--log-format", type=LOG_FORMATS, default=None, expose_value=False, is_eager=True,
                 callback=_log_format_cb, help="auto (colour on a TTY), text or json. Logs go to stderr."),
    SharedOption("--log-level", type=LOG_LEVELS, default=None, expose_value=False, is_eager=True,
                 callback=_log_level_cb, help="trace, debug, info, warn or error (default info)."),
]

RESOLUTION_OPTIONS = [
    SharedOption("--host-root", default=None, help="Where the host's / is mounted (default /, or HOST_ROOT)."),
    SharedOption("--kernel-release", "--kernelrelease", "kernel_release", default=None,
                 help="Kernel release to target instead of `uname -r`."),
    SharedOption("--kernel-version", "--kernelversion", "kernel_version", default=None,
                 help="Kernel version to target instead of `uname -v`."),
    SharedOption("--arch", default=None, help="x86_64 or aarch64 (amd64/arm64 accepted) instead of `uname -m`."),
    SharedOption("--type", "driver_types", multiple=True, default=None,
                 help="Driver types in priority order: kmod, ebpf, modern_ebpf, auto. Repeatable or comma-separated."),
    SharedOption("--driver-version", "--version", "driver_version", default=None,
                 help="Driver version, e.g. 8.0.0+driver (default: from Falco or /usr/src)."),
    SharedOption("--name", "driver_name", default=None, help="Driver name (default falco)."),
    SharedOption("--repo", "repos", multiple=True, default=None,
                 help="Repository: an http(s) or file:// base URL, or oci://REGISTRY/REPOSITORY. Repeatable; tried "
                      "in order."),
    SharedOption("--cache-dir", default=None, help="Artifact cache directory (default $HOME/.falco)."),
    SharedOption("--config", "config_path", default=None,
                 help=f"falcoctl config file to read driver.* settings from (default {DEFAULT_CONFIG_PATH})."),
    SharedOption("--output", type=click.Choice(["text", "json"]), default=None, help="Result format on stdout."),
]

FETCH_OPTIONS = [
    SharedOption("--http-timeout", type=float, default=None,
                 help=f"Connect and read timeout in seconds (default {HttpOptions.timeout:g})."),
    SharedOption("--http-retries", type=int, default=None,
                 help=f"Retries on connection errors, 429, 5xx (default {HttpOptions.retries})."),
    SharedOption("--download-timeout", type=float, default=None,
                 help=f"Seconds one download may take in all: connecting, retries, headers and body (default "
                      f"{HttpOptions.download_timeout:g}; env FALCOCTL_DRIVER_DOWNLOAD_TIMEOUT)."),
    SharedOption("--http-header", "http_headers", multiple=True, default=None,
                 help="Extra request header 'Key: Value'. Repeatable."),
    SharedOption("--http-headers", "http_headers_csv", default=None, hidden=True,
                 help="falcoctl spelling: comma-separated 'Key: Value' list."),
    SharedOption("--http-insecure", is_flag=True, default=None, help="Skip TLS verification (explicit opt-in)."),
    SharedOption("--ca-bundle", default=None, help="CA bundle for TLS verification."),
    SharedOption("--max-size", type=int, default=None, help="Largest artifact accepted, in bytes (default 512 MiB)."),
    SharedOption("--sha256", default=None, help="Expected SHA-256 of the artifact (pinned)."),
    SharedOption("--checksums", default=None, help="A sha256sum-format file with pinned checksums."),
    SharedOption("--verify", type=click.Choice(["auto", "strict", "off"]), default=None,
                 help="auto: verify when a checksum exists; strict: require one; off."),
    SharedOption("--version-fallback/--no-version-fallback", default=None,
                 help="Look for other versions in the compatible range when the default has no artifact."),
    SharedOption("--verify-key", default=None,
                 help="PEM public key (cosign.pub): use only artifacts with a valid signature by it "
                      "(env FALCOCTL_DRIVER_VERIFY_KEY)."),
    SharedOption("--registry-username", default=None,
                 help="User name for oci:// registries, with FALCOCTL_DRIVER_REGISTRY_PASSWORD "
                      "(default: the Docker/Podman auth file)."),
    SharedOption("--registry-password", default=None, hidden=True,
                 help="Password or token for oci:// registries; prefer FALCOCTL_DRIVER_REGISTRY_PASSWORD."),
    SharedOption("--registry-auth-file", default=None,
                 help="Docker/Podman auth file for oci:// registries (default REGISTRY_AUTH_FILE, "
                      "$XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json)."),
    SharedOption("--registry-plain-http", is_flag=True, default=None,
                 help="Allow plain http to oci:// registries that are not on loopback (explicit opt-in)."),
]

BUILD_OPTIONS = [
    SharedOption("--build-timeout", type=float, default=None,
                 help="Seconds per build attempt, DKMS or make (default 900; env FALCOCTL_DRIVER_BUILD_TIMEOUT)."),
    SharedOption("--tool-timeout", type=float, default=None,
                 help="Seconds for depmod and dkms status/remove (default 600; env FALCOCTL_DRIVER_TOOL_TIMEOUT)."),
]

INSTALL_OPTIONS = [
    SharedOption("--download/--no-download", default=None, help="Try prebuilt downloads (default on)."),
    SharedOption("--compile/--no-compile", default=None, help="Try a local build (default on)."),
    SharedOption("--dry-run", is_flag=True, default=None, help="Print the plan and change nothing."),
    SharedOption("--persist", is_flag=True, default=None,
                 help="Also install into /lib/modules/<release>/extra and run depmod."),
    SharedOption("--unload-retries", type=int, default=None, help="Unload attempts while the module is busy."),
    SharedOption("--falco-config-dir", default=None, help="Falco config dir for config.d (default /etc/falco)."),
    SharedOption("--update-falco/--no-update-falco", default=None,
                 help="Write config.d/engine-kind-falcoctl.yaml for Falco (default on)."),
]


PUBLISH_OPTIONS = [
    SharedOption("--publish", "publish_to", default=None, metavar="oci://REGISTRY/REPOSITORY",
                 help="After a successful local build, push the driver to this OCI repository "
                      "(docs/oci-layout.md); nodes on the same kernel then pull it instead of building."),
    SharedOption("--sign-key", default=None, envvar="FALCOCTL_DRIVER_SIGN_KEY",
                 help="Sign what is published with this ECDSA P-256 private key (PEM PKCS#8/SEC1, or cosign.key; "
                      "password from FALCOCTL_DRIVER_SIGN_KEY_PASSWORD or COSIGN_PASSWORD), as cosign does."),
]

# What a build job needs to reach a registry (`build --publish`); install and publish have all of FETCH_OPTIONS.
REGISTRY_OPTION_NAMES = ("http_timeout", "http_retries", "download_timeout", "http_insecure", "ca_bundle",
                         "registry_username", "registry_password", "registry_auth_file", "registry_plain_http")


def log_options(func: Callable) -> Callable:
    return apply_options(LOG_OPTIONS, func)


def resolution_options(func: Callable) -> Callable:
    return apply_options(RESOLUTION_OPTIONS + LOG_OPTIONS, func)


def fetch_options(func: Callable) -> Callable:
    return apply_options(FETCH_OPTIONS, func)


def build_options(func: Callable) -> Callable:
    return apply_options(BUILD_OPTIONS, func)


def install_options(func: Callable) -> Callable:
    return apply_options(INSTALL_OPTIONS, func)


def publish_options(func: Callable) -> Callable:
    return apply_options(PUBLISH_OPTIONS, func)


def registry_options(func: Callable) -> Callable:
    """The options that reach a registry, for commands without FETCH_OPTIONS."""
    return apply_options([shared(name) for name in REGISTRY_OPTION_NAMES], func)


def shared(name: str, *, help: Optional[str] = None) -> SharedOption:
    """The shared option whose parameter is `name` (e.g. "kernel_release"), for commands that take some options of
    a group and not the others; `help` rewords it for that command without changing the flag."""
    for option in LOG_OPTIONS + RESOLUTION_OPTIONS + FETCH_OPTIONS + BUILD_OPTIONS + INSTALL_OPTIONS + PUBLISH_OPTIONS:
        if option.name == name:
            return option.with_help(help) if help is not None else option
    raise KeyError(f"no shared option {name!r}")


def home_dir() -> str:
    home = os.environ.get("HOME")
    if home:
        return home
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return "/root"


def settings_from_flags(flags: Dict[str, Any], env=None) -> Settings:
    """Resolve Settings from this command's flags, the environment and the config file."""
    env = os.environ if env is None else env
    given = {k: v for k, v in flags.items() if v is not None and v != ()}
    csv = given.pop("http_headers_csv", None)
    if csv is not None:
        given["http_headers"] = list(given.get("http_headers", ())) + [csv]
    config_path = os.path.abspath(given.get("config_path") or DEFAULT_CONFIG_PATH)
    config = load_driver_section(config_path, required="config_path" in given)
    _remember_config_secrets(config)
    settings = resolve_settings(given, env, config, home=home_dir(), config_path=config_path)
    CACHE_DIRS_IN_USE.append(settings.cache_dir)
    return settings


# The cache directories this process resolved: an interrupted run removes its own partial files there.
CACHE_DIRS_IN_USE: List[str] = []


def _remember_config_secrets(section: Any) -> None:
    """The config file's repositories may carry credentials: redact them before anything can print them."""
    from driver_loader.output import boundary

    if isinstance(section, dict):
        repos = {str(k).lower(): v for k, v in section.items()}.get("repos")
        values = [repos] if isinstance(repos, str) else repos if isinstance(repos, list) else []
        boundary.remember_urls(str(v) for v in values)
