"""Minikube: recognised by an x.y.z in etc/VERSION, whatever os-release says; no headers package."""

from __future__ import annotations

from typing import Optional

from driver_loader.core.distros.base import (
    NO_HEADERS_PACKAGE,
    Distro,
    DistroInitError,
    HeadersRecipe,
    HostFacts,
    Naming,
)
from driver_loader.core.kernelrelease import KernelRelease

# The file whose content HostFacts carries as `version_file`.
VERSION_FILE = "etc/VERSION"


class Minikube(Distro):
    name = "minikube"
    ids = ("minikube",)
    markers = (VERSION_FILE,)
    marker_priority = 0

    def claims(self, facts: HostFacts) -> bool:
        return facts.minikube_version is not None

    def resolve(self, facts: HostFacts, kr: KernelRelease) -> Naming:
        version = facts.minikube_version
        if version is None:
            raise DistroInitError("etc/VERSION holds no x.y.z minikube version")
        return Naming("minikube", str(kr) or facts.kernel_release, f"1_{version}")

    def legacy(self, facts: HostFacts) -> Naming:
        return Naming("minikube", facts.kernel_release, f"1_{facts.minikube_version}")

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return NO_HEADERS_PACKAGE


DISTRO = Minikube()
