"""Talos: the kernel version part is `1_<VERSION_ID>` (VERSION_ID already starts with `v`); no headers package."""

from __future__ import annotations

from typing import Optional

from driver_loader.core.distros.base import NO_HEADERS_PACKAGE, Distro, HeadersRecipe, HostFacts, Naming, required
from driver_loader.core.kernelrelease import KernelRelease


class Talos(Distro):
    name = "talos"
    ids = ("talos",)

    def resolve(self, facts: HostFacts, kr: KernelRelease) -> Naming:
        return Naming("talos", str(kr) or facts.kernel_release, f"1_{required(facts, 'VERSION_ID')}")

    def legacy(self, facts: HostFacts) -> Naming:
        return Naming("talos", facts.kernel_release, f"1_{facts.field('VERSION_ID') or ''}")

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return NO_HEADERS_PACKAGE


DISTRO = Talos()
