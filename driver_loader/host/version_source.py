"""Where the driver version comes from when the user did not give one: Falco itself, then the installed sources."""

from __future__ import annotations

import os
import posixpath
from typing import Iterable, Optional, Tuple

from driver_loader.core.errors import UsageError
from driver_loader.core.plan import DriverRequirement
from driver_loader.core.settings import Settings
from driver_loader.core.versions import greatest_release
from driver_loader.output.log import get_logger

log = get_logger()
_FALCO_TIMEOUT = 15


def resolve_requirement(settings: Settings, *, falco_binary: Optional[str] = None) -> DriverRequirement:
    """The first source that gives a version wins: the settings (flag, env, config), `falco --version`, the
    greatest `/usr/src/<name>-*` release. Falco's API/schema minimums are added whenever Falco can tell them."""
    falco = _falco_versions(falco_binary) if settings.driver_version is None else None
    if settings.driver_version is not None:
        return DriverRequirement(settings.driver_version, "settings")
    if falco and falco.get("default_driver_version"):
        return DriverRequirement(
            str(falco["default_driver_version"]),
            "falco --version",
            api_version=_str_or_none(falco.get("driver_api_version")),
            schema_version=_str_or_none(falco.get("driver_schema_version")),
        )
    roots = [settings.host_root, "/"] if settings.host_root != "/" else ["/"]
    from_sources = version_from_sources(settings.driver_name, roots)
    if from_sources:
        return DriverRequirement(from_sources, "/usr/src")
    raise UsageError(
        "no driver version: none was given and none could be detected",
        tried=[
            "--driver-version",
            "FALCOCTL_DRIVER_VERSION / DRIVER_VERSION",
            f"driver.version in {settings.config_path}",
            "falco --version -o json_output=true",
            f"/usr/src/{settings.driver_name}-* directories",
        ],
        hint="pass --driver-version (e.g. 8.0.0+driver), set FALCOCTL_DRIVER_VERSION, or install Falco",
    )


def falco_interface_versions(falco_binary: Optional[str] = None) -> Tuple[Optional[str], Optional[str]]:
    """The driver API and schema versions Falco requires, as `falco --version` reports them; (None, None) when no
    Falco answers."""
    falco = _falco_versions(falco_binary) or {}
    return _str_or_none(falco.get("driver_api_version")), _str_or_none(falco.get("driver_schema_version"))


def falco_libs_version(falco_binary: Optional[str] = None) -> Optional[str]:
    """The version of the libs (libscap, libsinsp) Falco is built with, as `falco --version` reports it; None when
    no Falco answers. Its userspace, not the driver, decides whether the legacy eBPF probe can be read."""
    falco = _falco_versions(falco_binary)
    return _str_or_none(falco.get("libs_version")) if falco else None


def _str_or_none(value) -> Optional[str]:
    return str(value) if value else None


def _falco_versions(falco_binary: Optional[str]) -> Optional[dict]:
    from driver_loader.system.documents import load_json
    from driver_loader.system.runner import CommandRunner

    runner = CommandRunner()
    binary = falco_binary or runner.which("falco")
    if not binary:
        return None
    result = runner.run([binary, "--version", "-o", "json_output=true"], timeout=_FALCO_TIMEOUT)
    if result.returncode is None:
        log.warning("could not ask falco for its driver version", binary=binary,
                    error=result.describe(_FALCO_TIMEOUT))
        return None
    for line in reversed(result.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = load_json(line)
            except ValueError:  # not JSON, or nested deeper than any real answer
                continue
            if isinstance(doc, dict):
                return doc
    log.warning("falco --version printed no JSON", binary=binary, status=result.returncode)
    return None


def version_from_sources(driver_name: str, roots: Iterable[str]) -> Optional[str]:
    """The greatest release among `<root>/usr/src/<name>-*` directories; failing that, the first other one."""
    prefix = f"{driver_name}-"
    versions: list = []
    for root in roots:
        src = posixpath.join(root, "usr/src")
        try:
            entries = sorted(os.listdir(src))
        except OSError:
            continue
        versions.extend(
            e[len(prefix):] for e in entries if e.startswith(prefix) and os.path.isdir(posixpath.join(src, e))
        )
    versions = [v for v in versions if v]
    return greatest_release(versions) or (versions[0] if versions else None)
