"""Minikube: recognised by an x.y.z in etc/VERSION, whatever os-release says."""

from __future__ import annotations

from driver_loader.core.distros.base import DistroInitError, HostFacts, Naming
from driver_loader.core.kernelrelease import KernelRelease

ID = "minikube"
MARKER = "etc/VERSION"


def resolve(facts: HostFacts, kr: KernelRelease) -> Naming:
    version = facts.minikube_version
    if version is None:
        raise DistroInitError("etc/VERSION holds no x.y.z minikube version")
    return Naming("minikube", str(kr) or facts.kernel_release, f"1_{version}")


def legacy(facts: HostFacts) -> Naming:
    return Naming("minikube", facts.kernel_release, f"1_{facts.minikube_version}")
