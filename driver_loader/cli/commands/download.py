"""`download`: put the verified prebuilt artifact for this host (or --kernel-release) in the cache, and print its
path (or JSON with --output json). Loads nothing."""

from __future__ import annotations

import json

import click

from driver_loader.cli.commands._options import fetch_options, resolution_options, settings_from_flags
from driver_loader.output.progress import DownloadBar
from driver_loader.pipeline.resolve import artifact_types_only, resolve_plan
from driver_loader.pipeline.verify import Artifact, keep_only_if_verified


@click.command("download")
@resolution_options
@fetch_options
def command(**flags) -> None:
    """Download and verify the prebuilt driver for this kernel into the cache, without loading it.

    Exit status: 3 when no compatible version is published for this kernel, 4 when a download failed
    verification, 1 for other failures (network, disk).
    """
    settings = settings_from_flags(flags)
    settings = artifact_types_only(settings, "download")
    plan = resolve_plan(settings, modern_ebpf_supported=False)

    from driver_loader.artifacts.cache import ArtifactCache
    from driver_loader.net.fetch import fetch_artifact  # the HTTP stack is only imported when something is fetched

    cache = ArtifactCache(settings.cache_dir)
    bar = DownloadBar(f"downloading {plan.driver_type}")
    try:
        result = fetch_artifact(plan, settings, cache=cache, progress=bar)
    finally:
        bar.close()
    # The same rule as install: a checksum the policy accepts, and an ELF that fits the kernel judged (the one named
    # with --kernel-release, or the running one). A 200 error page is not a driver, whatever its sidecar says.
    verified = keep_only_if_verified(Artifact.fetched(result), plan, settings, cache)
    if settings.output == "json":
        click.echo(json.dumps({
            "path": result.path,
            "version": result.version,
            "sha256": result.sha256,
            "url": result.url,
            "verified_by": str(verified.decision.evidence),
            "signed_by": result.signed_by or None,
            "source": result.source,
            "driver_type": str(plan.driver_type),
        }, indent=2))
    else:
        click.echo(result.path)
