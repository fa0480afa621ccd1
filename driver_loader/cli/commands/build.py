"""`build`: build the kernel module (DKMS) or legacy eBPF probe (make) into the cache without loading it, e.g. to
bake a driver into an image. Prints the artifact's path, or JSON with --output json."""

from __future__ import annotations

import json

import click

from driver_loader.artifacts.cache import ArtifactCache
from driver_loader.build.local_build import build_artifact
from driver_loader.cli.commands._options import build_options, resolution_options, settings_from_flags
from driver_loader.output.progress import BuildSpinner
from driver_loader.pipeline.resolve import artifact_types_only, resolve_plan
from driver_loader.pipeline.verify import Artifact, keep_only_if_verified


@click.command("build")
@resolution_options
@build_options
def command(**flags) -> None:
    """Build the driver for this kernel (or --kernel-release) into the cache, without loading it."""
    settings = settings_from_flags(flags)
    settings = artifact_types_only(settings, "build")
    plan = resolve_plan(settings, modern_ebpf_supported=False)
    cache = ArtifactCache(settings.cache_dir)
    spinner = BuildSpinner()
    try:
        result = build_artifact(plan, settings, cache=cache, progress=spinner)
    finally:
        spinner.close()
    # The same rule as install, judged against the kernel the build was for.
    verified = keep_only_if_verified(Artifact.built(result), plan, settings, cache)
    if settings.output == "json":
        click.echo(json.dumps({
            "driver_type": str(plan.driver_type),
            "driver_name": settings.driver_name,
            "driver_version": plan.driver_version,
            "kernel_release": plan.kernel_release,
            "path": result.path,
            "sha256": result.sha256,
            "verified_by": str(verified.decision.evidence),
            "log_path": result.log_path,
        }, indent=2))
    else:
        click.echo(result.path)
