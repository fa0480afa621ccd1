"""Amazon Linux: the target encodes the major release."""

from __future__ import annotations

from driver_loader.core.distros.base import HostFacts, Naming, generic_legacy_naming, generic_naming, required
from driver_loader.core.kernelrelease import KernelRelease

ID = "amzn"
_TARGETS = {"2": "amazonlinux2", "2022": "amazonlinux2022", "2023": "amazonlinux2023"}


def _target(version_id: str) -> str:
    return _TARGETS.get(version_id, "amazonlinux")


def resolve(facts: HostFacts, kr: KernelRelease) -> Naming:
    return generic_naming(_target(required(facts, "VERSION_ID")), facts, kr)


def legacy(facts: HostFacts) -> Naming:
    return generic_legacy_naming(_target(facts.field("VERSION_ID") or ""), facts)
