"""`build`: build the kernel module (DKMS) or legacy eBPF probe (make) into the cache without loading it, e.g. to
bake a driver into an image. Prints the artifact's path, or JSON with --output json."""

from __future__ import annotations

import dataclasses
import json

import click

from driver_loader.build import build_artifact
from driver_loader.commands._options import build_options, resolution_options, settings_from_flags
from driver_loader.errors import UsageError
from driver_loader.resolve import resolve_plan


@click.command("build")
@resolution_options
@build_options
def command(**flags) -> None:
    """Build the driver for this kernel (or --kernel-release) into the cache, without loading it."""
    settings = settings_from_flags(flags)
    # modern_ebpf ships inside Falco: only the types with an artifact can be built, in the given priority order.
    buildable = tuple(kind for kind in settings.driver_types if kind.has_artifact)
    if not buildable:
        raise UsageError(
            "nothing to build: the modern_ebpf driver ships inside Falco",
            hint="build makes the kernel module (--type kmod) or the legacy eBPF probe (--type ebpf)",
        )
    settings = dataclasses.replace(settings, driver_types=buildable)
    plan = resolve_plan(settings, modern_ebpf_supported=False)
    result = build_artifact(plan, settings)
    if settings.output == "json":
        click.echo(json.dumps({
            "driver_type": str(plan.driver_type),
            "driver_name": settings.driver_name,
            "driver_version": plan.driver_version,
            "kernel_release": plan.kernel_release,
            "path": result.path,
            "sha256": result.sha256,
            "verified_by": result.verified_by,
            "log_path": result.log_path,
        }, indent=2))
    else:
        click.echo(result.path)
