"""Talos: the kernel version part is `1_<VERSION_ID>` (VERSION_ID already starts with `v`)."""

from __future__ import annotations

from driver_loader.core.distros.base import HostFacts, Naming, required
from driver_loader.core.kernelrelease import KernelRelease

ID = "talos"


def resolve(facts: HostFacts, kr: KernelRelease) -> Naming:
    return Naming("talos", str(kr) or facts.kernel_release, f"1_{required(facts, 'VERSION_ID')}")


def legacy(facts: HostFacts) -> Naming:
    return Naming("talos", facts.kernel_release, f"1_{facts.field('VERSION_ID') or ''}")
