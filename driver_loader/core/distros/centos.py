"""CentOS: generic naming; also recognised by etc/centos-release."""

from __future__ import annotations

from driver_loader.core.distros.base import HostFacts, Naming, generic_naming
from driver_loader.core.kernelrelease import KernelRelease

ID = "centos"
MARKER = "etc/centos-release"


def resolve(facts: HostFacts, kr: KernelRelease) -> Naming:
    return generic_naming("centos", facts, kr)
