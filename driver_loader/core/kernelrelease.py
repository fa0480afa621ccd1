"""Kernel release strings (`uname -r`), parsed the way driverkit does."""

from __future__ import annotations

import re
from typing import NamedTuple, Tuple

# driverkit v0.23.1 pkg/kernelrelease; re.ASCII so \d is 0-9 only.
_RELEASE = re.compile(
    r"(?P<fullversion>^(?P<version>0|[1-9]\d*)(?:\.(?P<patchlevel>0|[1-9]\d*)[.+]?(?P<sublevel>0|[1-9]\d*)?)?)"
    r"(?P<fullextraversion>[-.+](?P<extraversion>\d+|\d*[a-zA-Z-][0-9a-zA-Z-]*)?"
    r"([\.+~](\d+|\d*[a-zA-Z-][0-9a-zA-Z-_]*))*)?"
    r"(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$",
    re.ASCII,
)

# Oldest kernels the kernel module supports, per architecture.
MODULE_MIN_KERNEL = {"x86_64": (3, 10, 0), "aarch64": (3, 16, 0)}
# Oldest kernels the legacy eBPF probe supports.
PROBE_MIN_KERNEL = {"x86_64": (4, 14, 0), "aarch64": (4, 17, 0)}
MODERN_EBPF_MIN_KERNEL = (5, 8, 0)


class KernelRelease(NamedTuple):  # not a frozen dataclass: defined at every start, and ten times cheaper
    fullversion: str = ""
    major: int = 0
    minor: int = 0
    patch: int = 0
    extraversion: str = ""
    fullextraversion: str = ""

    @property
    def version(self) -> Tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __str__(self) -> str:
        return self.fullversion + self.fullextraversion

    def supports_module(self, arch: str) -> bool:
        return self.version >= MODULE_MIN_KERNEL.get(arch, (0, 0, 0))

    def supports_probe(self, arch: str) -> bool:
        return self.version >= PROBE_MIN_KERNEL.get(arch, (0, 0, 0))


def parse_kernel_release(release: str) -> KernelRelease:
    """Parse like driverkit: no match gives the all-zero value; missing minor/patch count as 0."""
    match = _RELEASE.search(release)
    if not match:
        return KernelRelease()
    groups = {k: v or "" for k, v in match.groupdict().items()}
    return KernelRelease(
        fullversion=groups["fullversion"],
        major=int(groups["version"] or 0),
        minor=int(groups["patchlevel"] or 0),
        patch=int(groups["sublevel"] or 0),
        extraversion=groups["extraversion"],
        fullextraversion=groups["fullextraversion"],
    )
