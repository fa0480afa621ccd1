"""`doctor`: what `install` would meet on this node, check by check, each pass, warn, fail or skip with advice.

Three parts: pipeline/doctor.py observes (the host, the running kernel, the cache, the repositories), core/doctor.py
judges through the acquisition policy, and this module renders and sets the exit status install would end with.
"""

from __future__ import annotations

import json
import sys
from typing import Sequence

import click

from driver_loader.cli.commands._options import (
    build_options,
    fetch_options,
    install_options,
    resolution_options,
    settings_from_flags,
)
from driver_loader.core.doctor import (  # noqa: F401 - the names doctor's callers and tests use
    FAIL,
    PASS,
    SKIP,
    WARN,
    ArtifactProbe,
    Check,
    Observations,
    RepoProbe,
    Verdict,
    evaluate,
    nearest_releases,
)
from driver_loader.pipeline.doctor import observe  # noqa: F401

# ---------------------------------------------------------------------------------------------------------------------
# Rendering


def render_text(checks: Sequence[Check], verdict: Verdict) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        lines.append(f"{check.status:<4}  {check.name:<{width}}  {check.summary}")
        if check.advice:
            lines.append(f"{'':<4}  {'':<{width}}  next: {check.advice}")
    lines.append("")
    lines.append(f"{'ok' if verdict.ok else 'FAIL'}: {verdict.message} (exit {int(verdict.exit_code)})")
    if verdict.advice:
        lines.append(f"  next: {verdict.advice}")
    return "\n".join(lines) + "\n"


def render_json(checks: Sequence[Check], verdict: Verdict) -> str:
    return json.dumps({"checks": [c.to_dict() for c in checks], "verdict": verdict.to_dict()}, indent=2)


@click.command("doctor")
@resolution_options
@fetch_options
@build_options
@install_options
def command(**flags) -> None:
    """Check what install would meet on this node (host, kernel, driver, repositories, build) without changing
    anything; exit with the status install would end with."""
    settings = settings_from_flags(flags)
    checks, verdict = evaluate(observe(settings))
    if settings.output == "json":
        click.echo(render_json(checks, verdict))
    else:
        click.echo(render_text(checks, verdict), nl=False)
    if not verdict.ok:
        sys.exit(int(verdict.exit_code))
