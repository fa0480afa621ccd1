"""`status`: what is in place right now — the loaded module, modern_ebpf support, the eBPF probe link, the cache
and Falco's config.d file. Read-only; a driver version that cannot be resolved only leaves "compatible" unknown."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Optional

import click

from driver_loader.cli.commands._options import resolution_options, settings_from_flags, shared
from driver_loader.core.errors import LoaderError
from driver_loader.core.settings import Settings
from driver_loader.core.versions import compatible_range
from driver_loader.falco.config import read_engine_config
from driver_loader.falco.probe_link import probe_link_path, read_probe_link
from driver_loader.host.modern_ebpf import ModernEbpfSupport, check_support
from driver_loader.kernel.modules import KernelModules
from driver_loader.output.log import get_logger

log = get_logger(__name__)


def collect_status(
    settings: Settings,
    *,
    kernel: Optional[KernelModules] = None,
    modern_support: Callable[[], ModernEbpfSupport] = check_support,
    driver_version: Optional[Callable[[Settings], str]] = None,
    cache: Optional[Any] = None,
) -> dict:
    kernel = kernel or KernelModules()
    version = _required_version(settings, driver_version)
    compatible = compatible_range(version) if version else None
    name = settings.kernel_module_name
    modules_supported = kernel.modules_supported()
    loaded = kernel.loaded(name) if modules_supported else None
    module: dict = {"name": name, "loaded": loaded is not None}
    if loaded is not None:
        module.update(loaded.to_dict())
        module["compatible"] = (
            compatible.contains(loaded.version) if compatible is not None and loaded.version else None
        )
    if cache is None:
        from driver_loader.artifacts.cache import ArtifactCache

        cache = ArtifactCache(settings.cache_dir)
    return {
        "driver_name": settings.driver_name,
        "driver_version": version,
        "compatible_range": str(compatible) if compatible else None,
        "modules_supported": modules_supported,
        "module": module,
        "modern_ebpf": dataclasses.asdict(modern_support()),
        "ebpf_probe": read_probe_link(probe_link_path(settings.cache_dir, settings.driver_name)).to_dict(),
        "cache": {"dir": settings.cache_dir, "entries": [dataclasses.asdict(e) for e in cache.entries()]},
        "falco_config": read_engine_config(settings.falco_config_dir).to_dict(),
    }


def _required_version(settings: Settings, driver_version: Optional[Callable[[Settings], str]]) -> Optional[str]:
    if driver_version is None:
        from driver_loader.host.version_source import resolve_requirement

        def driver_version(s: Settings) -> str:
            return resolve_requirement(s).version

    try:
        return driver_version(settings)
    except LoaderError as error:
        log.info("no driver version to compare the loaded module with", reason=error.message)
        return None


def status_text(report: dict) -> str:
    module = report["module"]
    if not report["modules_supported"]:
        module_line = "module: this kernel cannot load modules"
    elif not module["loaded"]:
        module_line = f"module: {module['name']} is not loaded"
    else:
        verdict = {True: f"within {report['compatible_range']}", False: f"outside {report['compatible_range']}",
                   None: "compatibility unknown"}[module["compatible"]]
        module_line = (f"module: {module['name']} {module['version'] or '(no version)'} loaded "
                       f"(refcnt {module['refcnt']}, holders: {', '.join(module['holders']) or 'none'}; {verdict})")
    modern = report["modern_ebpf"]
    probe = report["ebpf_probe"]
    config = report["falco_config"]
    lines = [
        module_line,
        f"modern_ebpf: {'supported' if modern['supported'] else 'not supported'} ({modern['reason']})",
        f"eBPF probe link: {probe['path']} -> {probe['target']}" if probe["target"]
        else f"eBPF probe link: none at {probe['path']}",
        f"cache: {report['cache']['dir']} ({len(report['cache']['entries'])} artifacts)",
    ]
    lines += [f"  {e['path']} sha256={e['sha256']} verified_by={e['verified_by']}" for e in report["cache"]["entries"]]
    if config["exists"]:
        lines.append(f"Falco config: {config['path']} (engine.kind: {config['kind'] or config['error']})")
    else:
        lines.append(f"Falco config: none at {config['path']}")
    return "\n".join(lines)


@click.command("status")
@resolution_options
@shared("falco_config_dir", help="Falco config dir to report on (default /etc/falco).")
def command(**flags) -> None:
    """Show the loaded driver, modern_ebpf support, the eBPF probe link, the cache and Falco's driver config."""
    settings = settings_from_flags(flags)
    report = collect_status(settings)
    if settings.output == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(status_text(report))
