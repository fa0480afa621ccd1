"""`build`: build the kernel module (DKMS) or legacy eBPF probe (make) into the cache without loading it, e.g. to
bake a driver into an image. Prints the artifact's path, or JSON with --output json. With --publish oci://..., a
builder job then pushes it to a registry (signed with --sign-key): a failed push is the job's failure (exit 1, or 4
when the artifact is refused), after the path was printed."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import click

from driver_loader.artifacts.cache import ArtifactCache
from driver_loader.build.local_build import build_artifact
from driver_loader.cli.commands._options import (
    build_options,
    publish_options,
    registry_options,
    resolution_options,
    settings_from_flags,
)
from driver_loader.output.progress import BuildSpinner
from driver_loader.pipeline.resolve import artifact_types_only, resolve_plan
from driver_loader.pipeline.verify import Artifact, keep_only_if_verified


@click.command("build")
@resolution_options
@build_options
@publish_options
@registry_options
def command(publish_to: Optional[str], sign_key: Optional[str], **flags) -> None:
    """Build the driver for this kernel (or --kernel-release) into the cache, without loading it; with --publish,
    push it to an OCI registry."""
    settings = settings_from_flags(flags)
    settings = artifact_types_only(settings, "build")
    target, key = None, None
    if publish_to or sign_key:  # checked before a build that may take many minutes
        from driver_loader.pipeline.publish import publish_request

        target, key = publish_request(publish_to, sign_key, os.environ)
    plan = resolve_plan(settings, modern_ebpf_supported=False)
    cache = ArtifactCache(settings.cache_dir)
    spinner = BuildSpinner()
    try:
        result = build_artifact(plan, settings, cache=cache, progress=spinner)
    finally:
        spinner.close()
    # The same rule as install, judged against the kernel the build was for.
    verified = keep_only_if_verified(Artifact.built(result), plan, settings, cache)
    if settings.output != "json":
        click.echo(result.path)
    published = None
    if target is not None:
        from driver_loader.pipeline.publish import publish_built

        published = publish_built(settings, cache, result.path, target, key=key, plan=plan)
    if settings.output == "json":
        document: Dict[str, Any] = {
            "driver_type": str(plan.driver_type),
            "driver_name": settings.driver_name,
            "driver_version": plan.driver_version,
            "kernel_release": plan.kernel_release,
            "path": result.path,
            "sha256": result.sha256,
            "verified_by": str(verified.decision.evidence),
            "log_path": result.log_path,
        }
        if target is not None:
            document["published"] = published.to_dict() if published is not None else None
        click.echo(json.dumps(document, indent=2))

