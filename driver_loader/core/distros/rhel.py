"""Red Hat Enterprise Linux: generic naming (no prebuilt drivers upstream); also etc/redhat-release."""

from __future__ import annotations

from driver_loader.core.distros.base import HostFacts, Naming, generic_naming
from driver_loader.core.kernelrelease import KernelRelease

ID = "rhel"
MARKER = "etc/redhat-release"


def resolve(facts: HostFacts, kr: KernelRelease) -> Naming:
    return generic_naming("rhel", facts, kr)
