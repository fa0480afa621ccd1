"""What a distro rule sees and what it decides. Pure data; the host reader fills HostFacts."""

from __future__ import annotations

import dataclasses
import re
from typing import FrozenSet, Mapping, Optional, Tuple

from driver_loader.core.driver_types import DriverType
from driver_loader.core.kernelrelease import KernelRelease

# Marker files that identify a distro when os-release is missing or unusable, in the order they are tried.
MINIKUBE_MARKER = "etc/VERSION"
MARKERS = (MINIKUBE_MARKER, "etc/debian_version", "etc/centos-release", "etc/redhat-release")

_MINIKUBE_VERSION = re.compile(r"(\d+(\.\d+){2})")
_GENERIC_KERNEL_VERSION = re.compile(r"#(\d+).*")


@dataclasses.dataclass(frozen=True)
class HostFacts:
    kernel_release: str
    kernel_version: str
    arch: str
    os_release: Mapping[str, str] = dataclasses.field(default_factory=dict)
    has_os_release: bool = False
    markers: FrozenSet[str] = frozenset()
    version_file: Optional[str] = None  # contents of etc/VERSION (minikube), when present

    def field(self, key: str) -> Optional[str]:
        """An os-release field, None when absent (an empty value is returned as '')."""
        return self.os_release.get(key)

    @property
    def minikube_version(self) -> Optional[str]:
        if self.version_file is None:
            return None
        match = _MINIKUBE_VERSION.search(self.version_file)
        return match.group(1) if match else None


@dataclasses.dataclass(frozen=True)
class Naming:
    """The three variable parts of an artifact file name."""

    target_id: str
    release: str
    version: str


@dataclasses.dataclass(frozen=True)
class DistroTarget:
    rule: str
    naming: Naming
    legacy: Optional[Naming] = None
    unsupported_types: FrozenSet[DriverType] = frozenset()
    notes: Tuple[str, ...] = ()


class DistroInitError(Exception):
    """The host claims to be this distro but lacks what the rule needs (e.g. VERSION_ID)."""


def generic_kernel_version(kernel_version: str) -> str:
    """falcoctl: the digits after the first '#', or the string unchanged."""
    match = _GENERIC_KERNEL_VERSION.search(kernel_version)
    return match.group(1) if match else kernel_version


def legacy_kernel_version(kernel_version: str) -> str:
    """Legacy loader: `sed 's/#\\([[:digit:]]\\+\\).*/\\1/'` keeps text before the '#'."""
    return _GENERIC_KERNEL_VERSION.sub(r"\1", kernel_version, count=1)


def generic_naming(target_id: str, facts: HostFacts, kr: KernelRelease) -> Naming:
    return Naming(target_id, str(kr) or facts.kernel_release, generic_kernel_version(facts.kernel_version))


def generic_legacy_naming(target_id: str, facts: HostFacts) -> Naming:
    return Naming(target_id, facts.kernel_release, legacy_kernel_version(facts.kernel_version))


def required(facts: HostFacts, key: str) -> str:
    value = facts.field(key)
    if value is None:
        raise DistroInitError(f"os-release has no {key}")
    return value
