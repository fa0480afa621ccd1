"""`inspect FILE`: what a driver artifact is, and whether it would load on this kernel (or on --kernel-release).

Exit status 0 when every check passes, 4 (verification) when one fails; the full report goes to stdout either way.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Optional, Sequence

import click

from driver_loader.artifacts.elf import inspect_artifact, read_bounded
from driver_loader.cli.commands import _options
from driver_loader.cli.commands._options import LOG_OPTIONS, settings_from_flags
from driver_loader.core.artifact_facts import ArtifactInfo
from driver_loader.core.checks import Finding, check_artifact, summarize
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import VerificationError
from driver_loader.core.kernel import RunningKernel
from driver_loader.core.versions import CompatibleRange, compatible_range
from driver_loader.host.root import kernel_facts
from driver_loader.host.version_source import falco_interface_versions
from driver_loader.pipeline.verify import read_judged_kernel, running_release

# Where the running kernel's /proc and /sys are; a seam for tests.
PROC_ROOT = "/proc"
SYS_ROOT = "/sys"

_OPTIONS = [
    click.argument("file", type=click.Path(exists=True, dir_okay=False)),
    _options.shared("output", help="Report format on stdout."),
    _options.shared("kernel_release", help="Check against this kernel release instead of `uname -r`."),
    _options.shared("arch"),
    _options.shared("driver_version",
                    help="Also check that the artifact is within the range this driver version accepts."),
    _options.shared("host_root", help="Where the host's / is mounted, to find /lib/modules and /boot (default /)."),
    *LOG_OPTIONS,
]


def build_report(
    path: str,
    sha256: str,
    info: ArtifactInfo,
    kernel: RunningKernel,
    findings: Sequence[Finding],
    compatible: Optional[CompatibleRange],
) -> dict:
    fits, reasons = summarize(findings)
    return {
        "file": path,
        "sha256": sha256,
        "artifact": info.to_dict(),
        "kernel": {
            "release": kernel.release,
            "arch": kernel.arch,
            "modules_supported": kernel.modules_supported,
            "vermagic": kernel.vermagic,
            "vermagic_source": kernel.vermagic_source,
            "sig_enforce": kernel.sig_enforce,
            "lockdown": kernel.lockdown,
            "symvers": kernel.symvers_source,
        },
        "compatible_range": str(compatible) if compatible is not None else None,
        "checks": [finding.to_dict() for finding in findings],
        "fits": fits,
        "reasons": reasons,
    }


def render_text(report: dict) -> str:
    art = report["artifact"]
    elf = art["elf"]
    rows = [
        ("file", report["file"]),
        ("sha256", report["sha256"]),
        ("kind", "kernel module (kmod)" if art["kind"] == "kmod" else "legacy eBPF probe (ebpf)"),
        ("elf", f"{elf['class']} {elf['type']} {elf['machine']} ({elf['machine_number']}), "
                f"{elf['byte_order']}-endian"),
        ("arch", art["arch"] or "-"),
    ]
    if art["kind"] == "kmod":
        rows.append(("name", _text(art["name"])))
    rows += [
        ("driver version", _text(art["driver_version"])),
        ("api version", _text(art["api_version"])),
        ("schema version", _text(art["schema_version"])),
        ("build commit", _text(art["build_commit"])),
        ("license", _text(art["license"])),
    ]
    if art["kind"] == "kmod":
        crcs = art["symbol_crcs"]
        modversions = f"yes, {len(crcs)} imported symbols" if art["modversions"] else "no"
        if "module_layout" in crcs:
            modversions += f" (module_layout {crcs['module_layout']})"
        signature = art["signature"]
        rows += [
            ("vermagic", _quoted(art["vermagic"])),
            ("srcversion", _text(art["srcversion"])),
            ("modversions", modversions),
            ("signature", f"{signature['id_type']}, {signature['sig_len']} bytes" if signature["signed"] else "none"),
        ]
        rows += [(f"modinfo {key}", _text(value)) for key, value in art["modinfo_entries"]
                 if key not in _SHOWN_MODINFO]
    else:
        rows.append(("kernel version", _text(art["kernel_version"])))
    kernel = report["kernel"]
    rows += [
        ("kernel", f"{kernel['release']} {kernel['arch']}"),
        ("kernel modules", "supported" if kernel["modules_supported"] else "not supported"),
        ("kernel vermagic", f"{_quoted(kernel['vermagic'])} ({kernel['vermagic_source']})"
         if kernel["vermagic"] else kernel["vermagic_source"]),
        ("signatures", _signature_policy(kernel)),
        ("Module.symvers", kernel["symvers"] or "not found"),
    ]
    if report["compatible_range"]:
        rows.append(("compatible range", report["compatible_range"]))
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{label + ':':<{width}}{value}" for label, value in rows]
    lines += ["", "checks:"]
    for check in report["checks"]:
        status = "FAIL" if not check["ok"] else ("warn" if check["warning"] else "ok")
        lines.append(f"  {status:<5}{check['code']:<22}{check['message']}")
        if check["hint"] and status != "ok":
            lines.append(f"  {'':<27}next: {check['hint']}")
    lines.append("")
    if report["fits"]:
        lines.append(f"verdict: fits kernel {kernel['release']}")
    else:
        lines.append(f"verdict: does not fit kernel {kernel['release']}")
        lines += [f"  - {reason}" for reason in report["reasons"]]
    return "\n".join(lines) + "\n"


_SHOWN_MODINFO = {"name", "version", "vermagic", "srcversion", "api_version", "schema_version", "build_commit",
                  "license"}


def _text(value: Optional[str]) -> str:
    if value is None:
        return "-"
    return value if value else "(empty)"


def _quoted(value: Optional[str]) -> str:
    # Quoted because the trailing space of a vermagic is significant.
    return "-" if value is None else repr(value)


def _signature_policy(kernel: dict) -> str:
    return f"sig_enforce={'Y' if kernel['sig_enforce'] else 'N'}, lockdown={kernel['lockdown'] or 'unknown'}"


def _inspect_options(func: Callable) -> Callable:
    return _options.apply_options(_OPTIONS, func)


@click.command("inspect")
@_inspect_options
def command(file: str, **flags) -> None:
    """Show a driver artifact's metadata (.ko, .ko.xz/.gz/.zst or legacy eBPF .o) and whether it fits this kernel.

    Exits 0 when it fits and 4 when it does not, with the reasons.
    """
    settings = settings_from_flags(flags)
    raw = read_bounded(file)
    info = inspect_artifact(raw, filename=file)
    release, _version, arch = kernel_facts(settings)
    # The kernel judged is the one named with --kernel-release, or the running one; the policy says which.
    kernel = read_judged_kernel(release, arch, settings, proc_root=PROC_ROOT, sys_root=SYS_ROOT,
                                running=running_release())
    driver_type = DriverType(info.kind)
    compatible = (
        compatible_range(settings.driver_version, exact=driver_type is DriverType.EBPF)
        if settings.driver_version
        else None
    )
    # Falco's own minimums when a Falco here reports them: libscap refuses a driver outside them.
    required_api, required_schema = falco_interface_versions()
    findings = check_artifact(info, kernel, driver_type=driver_type, compatible=compatible,
                              required_api=required_api, required_schema=required_schema)
    report = build_report(file, hashlib.sha256(raw).hexdigest(), info, kernel, findings, compatible)
    if settings.output == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_text(report), nl=False)
    if not report["fits"]:
        first_failure = next(finding for finding in findings if not finding.ok)
        raise VerificationError(
            f"{file} does not fit kernel {release}: " + "; ".join(report["reasons"]),
            hint=first_failure.hint,
        )

