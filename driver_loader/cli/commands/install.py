"""`install`: put the driver in place (load the module, or hand the probe over) and tell Falco about it.

Progress and the summary go to stderr; stdout carries only the result: `FALCO_BPF_PROBE=<path>` for the legacy
eBPF probe, or the whole result with --output json.
"""

from __future__ import annotations

import json
from typing import List, Tuple

import click

from driver_loader.cli.commands._options import (
    build_options,
    fetch_options,
    install_options,
    resolution_options,
    settings_from_flags,
)
from driver_loader.cli.commands.printenv import env_lines, plan_json
from driver_loader.core.driver_types import DriverType
from driver_loader.output import log as logging_setup
from driver_loader.pipeline.install import SOURCE_LOADED, InstallResult, dry_run, install


@click.command("install")
@resolution_options
@fetch_options
@build_options
@install_options
def command(**flags) -> None:
    """Install the driver: reuse a compatible loaded module, else download (or build) a verified artifact, load
    it or point Falco's probe link at it, and write Falco's config.d engine file."""
    settings = settings_from_flags(flags)
    if settings.dry_run:
        report = dry_run(settings)
        if settings.output == "json":
            click.echo(json.dumps({"dry_run": True, "plan": plan_json(report.plan), "steps": list(report.steps)},
                                  indent=2))
        else:
            click.echo(env_lines(report.plan), nl=False)
            click.echo("".join(f"would: {step}\n" for step in report.steps), nl=False)
        return
    result = install(settings)
    logging_setup.summary(*summary(result))
    if settings.output == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
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
