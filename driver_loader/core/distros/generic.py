"""Any other distro: the lower-cased os-release ID is the target, and the generic kernel-version rule applies."""

from __future__ import annotations

from driver_loader.core.distros.base import HostFacts, Naming, generic_naming
from driver_loader.core.kernelrelease import KernelRelease

ID = "generic"


def resolve(facts: HostFacts, kr: KernelRelease) -> Naming:
    return generic_naming((facts.field("ID") or "").strip().lower(), facts, kr)
