"""`printenv`: what the loader would use, in falcoctl's KEY="value" format or as JSON. Needs no root, no network
and no falco binary when the driver version is given."""

from __future__ import annotations

import click

from driver_loader.cli.commands._options import resolution_options, settings_from_flags
from driver_loader.core.plan import Plan
from driver_loader.pipeline.resolve import resolve_plan


def go_quote(value: str) -> str:
    """Go's strconv.Quote, as falcoctl prints values."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch in "\a\b\f\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"}[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF or code == 0xFFFD or not ch.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def env_lines(plan: Plan) -> str:
    s = plan.settings
    pairs = [
        ("DRIVER", str(plan.driver_type)),
        ("DRIVERS_REPO", ", ".join(s.repos)),
        ("DRIVER_VERSION", plan.driver_version),
        ("DRIVER_NAME", s.driver_name),
        ("HOST_ROOT", s.host_root),
        ("TARGET_ID", plan.target_id),
        ("ARCH", plan.arch),
        ("KERNEL_RELEASE", plan.kernel_release),
        ("KERNEL_VERSION", plan.kernel_version),
        ("FIXED_KERNEL_RELEASE", plan.fixed_kernel_release),
        ("FIXED_KERNEL_VERSION", plan.fixed_kernel_version),
    ]
    return "".join(f"{key}={go_quote(value)}\n" for key, value in pairs)


def plan_json(plan: Plan) -> dict:
    s = plan.settings
    return {
        "driver_type": str(plan.driver_type),
        "driver_name": s.driver_name,
        "driver_version": plan.driver_version,
        "compatible_range": str(plan.compatible) if plan.driver_version else None,
        "host_root": s.host_root,
        "arch": plan.arch,
        "target_id": plan.target_id,
        "kernel_release": plan.kernel_release,
        "kernel_version": plan.kernel_version,
        "fixed_kernel_release": plan.fixed_kernel_release,
        "fixed_kernel_version": plan.fixed_kernel_version,
        "repos": list(s.repos),
        "candidates": [
            {"filename": c.filename, "cache_path": c.cache_path, "urls": list(c.urls)} for c in plan.candidates
        ],
    }


@click.command("printenv")
@resolution_options
def command(**flags) -> None:
    """Print the variables the driver would be installed with (falcoctl's format, or --output json)."""
    settings = settings_from_flags(flags)
    plan = resolve_plan(settings, require_supported_type=False)
    if settings.output == "json":
        import json  # only for --output json: the default format must not pay for it

        click.echo(json.dumps(plan_json(plan), indent=2))
    else:
        click.echo(env_lines(plan), nl=False)
