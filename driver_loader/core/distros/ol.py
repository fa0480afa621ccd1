"""Oracle Linux: the UEK kernels cannot take the kernel module, and have their own headers package."""

from __future__ import annotations

from typing import FrozenSet, Optional

from driver_loader.core.distros.base import DNF, Distro, HeadersRecipe, HostFacts
from driver_loader.core.driver_types import DriverType
from driver_loader.core.kernelrelease import KernelRelease

_UEK = HeadersRecipe("dnf install", "kernel-uek-devel-", True)


class OracleLinux(Distro):
    name = "ol"
    ids = ("ol",)

    def unsupported(self, facts: HostFacts, kr: KernelRelease) -> FrozenSet[DriverType]:
        return frozenset({DriverType.KMOD}) if "uek" in (str(kr) or facts.kernel_release) else frozenset()

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return _UEK if "uek" in kernel_release else DNF


DISTRO = OracleLinux()
