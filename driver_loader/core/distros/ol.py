"""Oracle Linux: the UEK kernels cannot take the kernel module."""

from __future__ import annotations

from driver_loader.core.distros.base import HostFacts, Naming, generic_naming
from driver_loader.core.driver_types import DriverType
from driver_loader.core.kernelrelease import KernelRelease

ID = "ol"


def resolve(facts: HostFacts, kr: KernelRelease) -> Naming:
    return generic_naming("ol", facts, kr)


def unsupported(facts: HostFacts, kr: KernelRelease) -> frozenset:
    return frozenset({DriverType.KMOD}) if "uek" in (str(kr) or facts.kernel_release) else frozenset()
