"""From settings to a plan: read the host, find the driver version, choose the driver type, make the plan.

The shared front half of printenv, download, build and install.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from driver_loader.core.distros import discover
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import UsageError
from driver_loader.core.kernelrelease import parse_kernel_release
from driver_loader.core.plan import DriverRequirement, Plan, choose_driver_type, make_plan, no_supported_type_error
from driver_loader.core.settings import Settings
from driver_loader.host.root import read_host_facts
from driver_loader.output.log import get_logger

log = get_logger()


def resolve_plan(settings: Settings, *, modules_supported: bool = True,
                 modern_ebpf_supported: Optional[bool] = None, require_supported_type: bool = True) -> Plan:
    """The plan for the first driver type this host supports. With require_supported_type=False (printenv, which
    only describes), a host that supports none of the types still gets the plan of the first one, with a warning."""
    facts = read_host_facts(settings)
    if not parse_kernel_release(facts.kernel_release).fullversion:
        raise UsageError(
            f"{facts.kernel_release!r} is not a kernel release",
            hint="pass --kernel-release as `uname -r` prints it, e.g. 6.1.0-13-amd64",
        )
    target = discover(facts)
    for note in target.notes:
        log.warning(note)
    try:
        requirement: Optional[DriverRequirement] = _requirement(settings)
        no_version: Optional[UsageError] = None
    except UsageError as missing:
        # Only the types with an artifact need a version: modern_ebpf ships inside Falco (the policy says so).
        requirement, no_version = None, missing
    if modern_ebpf_supported is None:
        modern_ebpf_supported = DriverType.MODERN_EBPF in settings.driver_types and _modern_ebpf_supported()
    choice = choose_driver_type(
        settings.driver_types,
        facts,
        target,
        modern_ebpf_supported=modern_ebpf_supported,
        modules_supported=modules_supported,
        driver_version=requirement.version if requirement else None,
    )
    for kind, reason in choice.skipped:
        log.info(f"skipping driver type {kind}", reason=reason)
    selected = choice.selected
    if selected is None:
        error = no_supported_type_error(choice, facts, target)
        if require_supported_type:
            raise error
        selected = settings.driver_types[0]
        log.warning(f"{error.message}; describing {selected} anyway", hint=error.hint)
    if requirement is None:
        from driver_loader.core.policy import needs_driver_version  # only without a version: printenv skips it

        if needs_driver_version(selected) and no_version is not None:
            raise no_version
        requirement = DriverRequirement("", "not needed: the modern_ebpf driver ships inside Falco")
    plan = make_plan(facts, settings, selected, requirement, target)
    for refusal in plan.refusals:
        log.warning("no download candidate", reason=refusal)
    return plan


def _requirement(settings: Settings) -> DriverRequirement:
    """The version given, or the one found on the host (version_source, imported only then: printenv with
    --driver-version needs none of it)."""
    if settings.driver_version is not None:
        return DriverRequirement(settings.driver_version, "settings")
    from driver_loader.host.version_source import resolve_requirement

    return resolve_requirement(settings)


def artifact_types_only(settings: Settings, verb: str) -> Settings:
    """Settings whose type list keeps only the types that have an artifact (modern_ebpf ships inside Falco)."""
    kinds = tuple(kind for kind in settings.driver_types if kind.has_artifact)
    if not kinds:
        raise UsageError(
            f"nothing to {verb}: the modern_ebpf driver ships inside Falco",
            hint=f"{verb} works on the kernel module (--type kmod) or the legacy eBPF probe (--type ebpf)",
        )
    return dataclasses.replace(settings, driver_types=kinds)


def _modern_ebpf_supported() -> bool:
    from driver_loader.host.modern_ebpf import check_support

    return check_support().supported
