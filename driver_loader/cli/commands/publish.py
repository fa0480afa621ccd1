"""`publish`: push verified drivers to an OCI registry (docs/oci-layout.md), so that nodes pull them instead of
building them. Results go to stdout (one line per driver, or one JSON document with --output json); logs to
stderr."""

from __future__ import annotations

import json
import os
from typing import Any, List, Optional, Union

import click

from driver_loader.cli.commands._options import fetch_options, resolution_options, settings_from_flags, shared
from driver_loader.core.errors import LoaderError, NoDriverError, UsageError, VerificationError


@click.command("publish")
@resolution_options
@fetch_options
@click.option("--all", "all_entries", is_flag=True, default=False,
              help="Push every verified driver of the cache (<cache>/<version>/<arch>/<file>), not only this host's.")
@click.option("--from-mirror", "mirror", default=None, metavar="DIR",
              help="Push every driver of a mirror directory <DIR>/<version>/<arch>/<file>, each checked against its "
                   ".sha256 sidecar or SHA256SUMS under --verify (air-gapped sites).")
@shared("sign_key")
@click.option("--force", is_flag=True, default=False,
              help="Replace a tag that holds another manifest (by default such a tag is left alone: exit 1).")
def command(all_entries: bool, mirror: Optional[str], sign_key: Optional[str], force: bool, **flags) -> None:
    """Push the driver `download` (or `build`) put in the cache for this kernel (or --kernel-release) to the one
    oci:// --repo, with its metadata config, at the layout's tag; signed with --sign-key. Idempotent: a tag that
    already holds the same manifest is left alone ("unchanged").

    Only artifacts the acquisition policy accepts are pushed (--verify, --sha256/--checksums, --verify-key), and only
    when the file is the driver its name says. Exit status: 3 when the cache holds no such driver, 4 when one was
    refused, 1 when the registry failed or a tag holds another manifest (--force replaces it), 2 for usage.
    """
    settings = settings_from_flags(flags)
    if all_entries and mirror:
        raise UsageError("--all and --from-mirror are two different sources; give one",
                         hint="--all pushes the cache, --from-mirror DIR a mirror directory")

    from driver_loader.artifacts.cache import ArtifactCache
    from driver_loader.net.http_checks import require_ca_bundle
    from driver_loader.pipeline import publish

    repository = publish.publish_target(settings.repos)
    require_ca_bundle(settings.http)
    key = publish.load_sign_key(sign_key, os.environ) if sign_key else None
    publisher = publish.Publisher(settings, repository, key=key, force=force)
    cache = ArtifactCache(settings.cache_dir)

    sources: List[Union[publish.DriverFile, publish.Skipped]]
    if mirror:
        sources = list(publish.mirror_drivers(mirror, settings))
        where = f"the mirror {os.path.abspath(mirror)}"
    elif all_entries:
        sources = list(publish.cache_drivers(cache, settings))
        where = f"the cache {cache.root}"
    else:
        from driver_loader.pipeline.resolve import artifact_types_only, resolve_plan

        plan = resolve_plan(artifact_types_only(settings, "publish"), modern_ebpf_supported=False)
        sources = [publish.plan_cache_driver(cache, plan, settings)]
        where = ""

    published: List[publish.Published] = []
    skipped: List[publish.Skipped] = []
    from driver_loader.output.log import get_logger

    log = get_logger(__name__)
    for source in sources:
        if isinstance(source, publish.Skipped):
            skipped.append(source)
            if source.error is not None:
                log.warning("not published", path=source.path, reason=source.reason,
                            **({"hint": source.error.hint} if source.error.hint else {}))
            else:
                log.info("skipped: not a driver", path=source.path, reason=source.reason)
            continue
        try:
            result = publisher.publish(source)
        except (VerificationError, publish.TagConflict) as rejection:
            if not (mirror or all_entries):  # the one artifact asked for: its refusal is the answer
                raise
            # This file, not the registry: the others go on (a registry failure stops the run).
            skipped.append(publish.Skipped(source.path, rejection.message, rejection))
            log.warning("not published", path=source.path, reason=rejection.message,
                        **({"hint": rejection.hint} if rejection.hint else {}))
            continue
        published.append(result)
        if settings.output != "json":
            click.echo(result.line())

    refused = [s for s in skipped if s.error is not None]
    if settings.output == "json":
        click.echo(json.dumps({"repository": repository.display,
                               "published": [p.to_dict() for p in published],
                               "skipped": [s.to_dict() for s in skipped]}, indent=2))
    if refused:
        first = refused[0].error
        assert first is not None  # noqa: S101 - refused entries carry their error
        raise LoaderError(f"{len(refused)} of {len(refused) + len(published)} drivers of {where} were not published; "
                          f"the first: {first.message}", hint=first.hint,
                          tried=_listed(refused), exit_code=first.exit_code)
    if not published:
        raise NoDriverError(f"{where} holds no {settings.driver_name} driver to publish",
                            tried=_listed(skipped),
                            hint="fill it with `download` or `build` (or point --cache-dir or --from-mirror at the "
                                 "right directory; --name sets the driver name)")


def _listed(skipped: List[Any], limit: int = 20) -> List[str]:
    """What was skipped and why, one line each, at most `limit` lines (the JSON result lists them all)."""
    lines = [f"{entry.path}: {entry.reason}" for entry in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"... and {len(skipped) - limit} more")
    return lines
