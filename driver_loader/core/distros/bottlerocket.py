"""Bottlerocket: the kernel version part is `1_<VERSION_ID>-<first word of VARIANT_ID>`."""

from __future__ import annotations

from driver_loader.core.distros.base import HostFacts, Naming, required
from driver_loader.core.kernelrelease import KernelRelease

ID = "bottlerocket"


def resolve(facts: HostFacts, kr: KernelRelease) -> Naming:
    version_id = required(facts, "VERSION_ID")
    variant = required(facts, "VARIANT_ID").split("-", 1)[0]
    return Naming("bottlerocket", str(kr) or facts.kernel_release, f"1_{version_id}-{variant}")


def legacy(facts: HostFacts) -> Naming:
    # The legacy loader left the variant empty when VARIANT_ID was missing: `1_1.14.1-`.
    variant = (facts.field("VARIANT_ID") or "").split("-", 1)[0]
    return Naming("bottlerocket", facts.kernel_release, f"1_{facts.field('VERSION_ID') or ''}-{variant}")
