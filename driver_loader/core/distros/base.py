"""What a distro rule sees and what it decides: the Distro interface every distro module implements, and the data
it works on. Pure; the host reader fills HostFacts."""

from __future__ import annotations

import re
import types
from typing import FrozenSet, Mapping, NamedTuple, Optional, Tuple

from driver_loader.core.driver_types import DriverType
from driver_loader.core.kernelrelease import KernelRelease

_MINIKUBE_VERSION = re.compile(r"(\d+(\.\d+){2})")
_GENERIC_KERNEL_VERSION = re.compile(r"#(\d+).*")


# The value types below are NamedTuples, not frozen dataclasses: every command, printenv included, defines them at
# start-up, and a NamedTuple costs a tenth of a frozen dataclass to define.


class HostFacts(NamedTuple):
    kernel_release: str
    kernel_version: str
    arch: str
    os_release: Mapping[str, str] = types.MappingProxyType({})
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


class Naming(NamedTuple):
    """The three variable parts of an artifact file name."""

    target_id: str
    release: str
    version: str


class DistroTarget(NamedTuple):
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


class HeadersRecipe(NamedTuple):
    """How to install the kernel headers a local build needs (a NamedTuple: defined at every start, used rarely)."""

    installer: str  # "apt-get install"
    package: str  # "linux-headers-"
    per_release: bool  # the package name ends in the exact kernel release


# The recipes several distros share.
DEB = HeadersRecipe("apt-get install", "linux-headers-", True)
DNF = HeadersRecipe("dnf install", "kernel-devel-", True)
YUM = HeadersRecipe("yum install", "kernel-devel-", True)
ZYPPER = HeadersRecipe("zypper install", "kernel-default-devel", False)
# For distros whose kernels come without an installable headers package: a local build cannot work there.
NO_HEADERS_PACKAGE = HeadersRecipe("", "", False)


class Distro:
    """One distro: how it is recognised, how its artifacts are named, what it cannot run and where its kernel
    headers come from. A new distro is one module in this package that defines `DISTRO`, an instance of a subclass
    (the registry finds it), and one row in tests/test_distros.py. Only what differs from the defaults is written.
    """

    #: The rule's name, as `DistroTarget.rule` reports it.
    name: str = ""
    #: os-release IDs (lower case) that pick this rule.
    ids: Tuple[str, ...] = ()
    #: Files under the host root that identify the distro when os-release is missing or unusable.
    markers: Tuple[str, ...] = ()
    #: Where its markers come in the order they are tried, lowest first (a distro whose marker another one also
    #: has, as CentOS has RHEL's etc/redhat-release, comes first).
    marker_priority: int = 100
    #: Its markers that the 0.36 bash loader knew too: the legacy naming looks only at those.
    legacy_markers: Tuple[str, ...] = ()

    def claims(self, facts: HostFacts) -> bool:
        """True when this rule applies whatever os-release says (minikube's etc/VERSION)."""
        return False

    def resolve(self, facts: HostFacts, kr: KernelRelease) -> Naming:
        """falcoctl's naming. By default the target is the lower-cased os-release ID (the first of `ids` when a
        marker file, not os-release, identified the distro) and the generic kernel-version rule applies.
        Raises DistroInitError when the host lacks what the rule needs."""
        os_id = (facts.field("ID") or "").strip().lower()
        return generic_naming(os_id if os_id in self.ids or not self.ids else self.ids[0], facts, kr)

    def legacy(self, facts: HostFacts) -> Optional[Naming]:
        """How the 0.36 bash loader named the artifact, when that differs from its generic treatment (None)."""
        return None

    def unsupported(self, facts: HostFacts, kr: KernelRelease) -> FrozenSet[DriverType]:
        """Driver types this host can never take."""
        return frozenset()

    def notes(self, facts: HostFacts) -> Tuple[str, ...]:
        """Warnings to log about this host."""
        return ()

    def owns_target(self, target_id: str) -> bool:
        """Whether `target_id` (a naming's target) is one this rule produces."""
        return target_id in self.ids

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        """How to install the kernel headers for `kernel_release`; NO_HEADERS_PACKAGE when the distro has none,
        None when it is not known."""
        return None
