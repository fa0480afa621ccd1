"""Container-Optimized OS: no kernel module support (modern_ebpf only), no headers package; BUILD_ID must be
present."""

from __future__ import annotations

from typing import FrozenSet, Optional

from driver_loader.core.distros.base import (
    NO_HEADERS_PACKAGE,
    Distro,
    HeadersRecipe,
    HostFacts,
    Naming,
    generic_naming,
    required,
)
from driver_loader.core.driver_types import DriverType
from driver_loader.core.kernelrelease import KernelRelease


class ContainerOptimizedOS(Distro):
    name = "cos"
    ids = ("cos",)

    def resolve(self, facts: HostFacts, kr: KernelRelease) -> Naming:
        required(facts, "BUILD_ID")
        return generic_naming("cos", facts, kr)

    def unsupported(self, facts: HostFacts, kr: KernelRelease) -> FrozenSet[DriverType]:
        return frozenset({DriverType.KMOD})

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return NO_HEADERS_PACKAGE


DISTRO = ContainerOptimizedOS()
