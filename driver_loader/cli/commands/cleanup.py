"""`cleanup`: undo what install did — unload the module (retrying while it is busy), remove its DKMS state and a
--persist copy, the eBPF probe link and Falco's config.d file; with --cache also the cached artifacts of this
driver. Idempotent: with nothing left to clean it changes nothing and exits 0."""

from __future__ import annotations

import json
import os
from typing import Any, List, Optional

import click

from driver_loader.cli.commands._options import resolution_options, settings_from_flags, shared
from driver_loader.core.errors import LoaderError
from driver_loader.core.settings import Settings
from driver_loader.falco.config import remove_engine_config
from driver_loader.falco.probe_link import probe_link_path, remove_probe_link
from driver_loader.host.root import kernel_facts
from driver_loader.kernel.modules import KernelModules, remove_persisted_module, unload_module
from driver_loader.output import log as logging_setup
from driver_loader.output.log import get_logger

log = get_logger(__name__)


def cleanup(
    settings: Settings,
    *,
    clean_cache: bool = False,
    kernel: Optional[KernelModules] = None,
    runner: Optional[Any] = None,
    cache: Optional[Any] = None,
) -> List[str]:
    """Everything it removed, as readable actions. Each step runs even when an earlier one failed; the first
    failure is raised at the end, carrying the others."""
    kernel = kernel or KernelModules()
    name = settings.kernel_module_name
    actions: List[str] = []
    problems: List[LoaderError] = []

    def step(function, *args, **kwargs) -> Any:
        try:
            return function(*args, **kwargs)
        except LoaderError as error:
            log.warning(error.message, hint=error.hint)
            problems.append(error)
            return None

    if kernel.modules_supported() and kernel.loaded(name) is not None:
        if kernel.is_root():
            unloaded = step(unload_module, kernel, name, retries=settings.unload_retries)
            if unloaded is not None:
                actions.append(f"unloaded {name} {unloaded.version or '(no version)'}")
        else:
            problems.append(LoaderError(f"module {name} is loaded, and unloading it needs root",
                                        hint="run cleanup as root"))
    release = kernel_facts(settings)[0]
    persisted = step(remove_persisted_module, name=name, release=release, host_root=settings.host_root,
                     runner=runner, timeout=settings.tool_timeout)
    if persisted:
        actions.append(f"removed {persisted} and ran depmod")
    from driver_loader.build.local_build import remove_dkms_state

    for dkms_name in dict.fromkeys((settings.driver_name, name)):
        removal = step(remove_dkms_state, dkms_name, runner=runner, timeout=settings.tool_timeout)
        if removal is not None:
            actions += [f"removed {dkms_name} {version} from DKMS" for version in removal.removed]
            problems += [LoaderError(f"dkms remove of {dkms_name} {version} failed") for version in removal.failed]
    link = probe_link_path(settings.cache_dir, settings.driver_name)
    if step(remove_probe_link, link):
        actions.append(f"removed the eBPF probe link {link}")
    if settings.update_falco:
        config = step(remove_engine_config, settings.falco_config_dir)
        if config:
            actions.append(f"removed {config}")
    if clean_cache:
        actions += _clean_cache(settings, cache, step)
    if problems:
        first = problems[0]
        raise type(first)(
            first.message,
            tried=[*first.tried, *(f"also: {p.message}" for p in problems[1:])],
            hint=first.hint,
            exit_code=first.exit_code,
        )
    return actions


def _clean_cache(settings: Settings, cache: Optional[Any], step) -> List[str]:
    """Remove this driver's artifacts from the cache: recorded entries and files put there by hand alike."""
    from driver_loader.artifacts.cache import LOCK_SUFFIX, META_SUFFIX, ArtifactCache

    cache = cache or ArtifactCache(settings.cache_dir)
    prefix = f"{settings.driver_name}_"
    removed = []
    for directory, dirnames, filenames in os.walk(settings.cache_dir, followlinks=False):
        dirnames.sort()
        for filename in sorted(filenames):
            path = os.path.join(directory, filename)
            if not filename.startswith(prefix) or filename.endswith((META_SUFFIX, LOCK_SUFFIX)):
                continue
            step(cache.remove, path)
            if not os.path.lexists(path):
                removed.append(f"removed {path} from the cache")
    return removed


@click.command("cleanup")
@resolution_options
@shared("tool_timeout")
@click.option("--cache", "clean_cache", is_flag=True, default=False,
              help="Also remove this driver's cached artifacts.")
@shared("unload_retries")
@shared("falco_config_dir", help="Falco config dir whose config.d file to remove.")
def command(clean_cache: bool, **flags) -> None:
    """Unload the module and remove what install left: DKMS state, the persisted module, the eBPF probe link,
    Falco's config.d file, and with --cache the cached artifacts."""
    settings = settings_from_flags(flags)
    actions = cleanup(settings, clean_cache=clean_cache)
    logging_setup.summary("cleaned up:" if actions else "nothing to clean", [f"- {a}" for a in actions])
    if settings.output == "json":
        click.echo(json.dumps({"actions": actions}, indent=2))
