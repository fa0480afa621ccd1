"""Container-Optimized OS: no kernel module support (modern_ebpf only); BUILD_ID must be present."""

from __future__ import annotations

from driver_loader.core.distros.base import HostFacts, Naming, generic_naming, required
from driver_loader.core.driver_types import DriverType
from driver_loader.core.kernelrelease import KernelRelease

ID = "cos"


def resolve(facts: HostFacts, kr: KernelRelease) -> Naming:
    required(facts, "BUILD_ID")
    return generic_naming("cos", facts, kr)


def unsupported(facts: HostFacts, kr: KernelRelease) -> frozenset:
    return frozenset({DriverType.KMOD})
