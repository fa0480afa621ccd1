"""`install`: put the driver in place (load the module, or hand the probe over) and tell Falco about it.

Progress and the summary go to stderr; stdout carries only the result: `FALCO_BPF_PROBE=<path>` for the legacy
eBPF probe, or the whole result with --output json.

With --publish oci://..., a driver this node had to build is pushed to the registry afterwards (signed with
--sign-key), so that nodes on the same kernel pull it instead of building it. The install is done by then: a failed
push is a warning, and the exit status stays the install's (0).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, List, Optional, Tuple

import click

from driver_loader.cli.commands._options import (
    build_options,
    fetch_options,
    install_options,
    publish_options,
    resolution_options,
    settings_from_flags,
)
from driver_loader.cli.commands.printenv import env_lines, plan_json
from driver_loader.core.driver_types import DriverType
from driver_loader.output import log as logging_setup
from driver_loader.pipeline.install import SOURCE_LOADED, InstallResult, dry_run, install

if TYPE_CHECKING:
    from driver_loader.artifacts.signature import PrivateKey
    from driver_loader.core.oci import OciRepository
    from driver_loader.core.settings import Settings
    from driver_loader.pipeline.publish import Published


@click.command("install")
@resolution_options
@fetch_options
@build_options
@install_options
@publish_options
def command(publish_to: Optional[str], sign_key: Optional[str], **flags) -> None:
    """Install the driver: reuse a compatible loaded module, else download (or build) a verified artifact, load
    it or point Falco's probe link at it, and write Falco's config.d engine file."""
    settings = settings_from_flags(flags)
    target, key = None, None
    if publish_to or sign_key:  # checked before anything is built or loaded
        from driver_loader.pipeline.publish import publish_request

        target, key = publish_request(publish_to, sign_key, os.environ)
    if settings.dry_run:
        report = dry_run(settings)
        steps = list(report.steps)
        if target is not None:
            steps.append(f"if the driver was built here, push it to {target.display}"
                         + (" signed" if key is not None else ""))
        if settings.output == "json":
            click.echo(json.dumps({"dry_run": True, "plan": plan_json(report.plan), "steps": steps}, indent=2))
        else:
            click.echo(env_lines(report.plan), nl=False)
            click.echo("".join(f"would: {step}\n" for step in steps), nl=False)
        return
    result = install(settings)
    published = _publish(result, settings, target, key) if target is not None else None
    head, details = summary(result)
    if published is not None:
        details.append(f"- {published.line()}")
    logging_setup.summary(head, details)
    if settings.output == "json":
        document = result.to_dict()
        if target is not None:
            document["published"] = published.to_dict() if published is not None else None
        click.echo(json.dumps(document, indent=2))
    elif result.driver_type is DriverType.EBPF:
        click.echo(f"FALCO_BPF_PROBE={result.probe}")


def summary(result: InstallResult) -> Tuple[str, List[str]]:
    if result.source == SOURCE_LOADED:
        head = f"{result.driver_type} {result.version} already loaded; nothing to do"
    elif result.driver_type is DriverType.MODERN_EBPF:
        head = "modern_ebpf selected: nothing to install, Falco uses its built-in probe"
    else:
        head = f"installed {result.driver_type} {result.version} ({result.source}: {result.artifact})"
    details = [f"- {action}" for action in result.actions]
    if result.falco_config:
        details.append(f"Falco config: {result.falco_config}")
    return head, details


def _publish(result: InstallResult, settings: Settings, target: OciRepository,
             key: Optional[PrivateKey]) -> Optional[Published]:
    """Push the installed driver when this node built it. The install is done: a failure is a warning, not an
    undo, and not the exit status."""
    if result.artifact is None:
        logging_setup.get_logger(__name__).info("nothing to publish: no driver file was used",
                                               source=result.source)
        return None
    from driver_loader.artifacts.cache import ArtifactCache
    from driver_loader.core.errors import LoaderError
    from driver_loader.pipeline.publish import publish_built

    try:
        return publish_built(settings, ArtifactCache(settings.cache_dir), result.artifact, target, key=key,
                             only_local_build=True)
    except LoaderError as failure:
        logging_setup.get_logger(__name__).warning(
            f"the driver is installed, but publishing it to {target.display} failed: {failure.message}",
            hint=failure.hint or "run `falco-driver-loader publish` with the same options to try again")
        return None
