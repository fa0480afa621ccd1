"""Bottlerocket: the kernel version part is `1_<VERSION_ID>-<first word of VARIANT_ID>`; no headers package."""

from __future__ import annotations

from typing import Optional

from driver_loader.core.distros.base import NO_HEADERS_PACKAGE, Distro, HeadersRecipe, HostFacts, Naming, required
from driver_loader.core.kernelrelease import KernelRelease


class Bottlerocket(Distro):
    name = "bottlerocket"
    ids = ("bottlerocket",)

    def resolve(self, facts: HostFacts, kr: KernelRelease) -> Naming:
        version_id = required(facts, "VERSION_ID")
        variant = required(facts, "VARIANT_ID").split("-", 1)[0]
        return Naming("bottlerocket", str(kr) or facts.kernel_release, f"1_{version_id}-{variant}")

    def legacy(self, facts: HostFacts) -> Naming:
        # The legacy loader left the variant empty when VARIANT_ID was missing: `1_1.14.1-`.
        variant = (facts.field("VARIANT_ID") or "").split("-", 1)[0]
        return Naming("bottlerocket", facts.kernel_release, f"1_{facts.field('VERSION_ID') or ''}-{variant}")

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return NO_HEADERS_PACKAGE


DISTRO = Bottlerocket()
