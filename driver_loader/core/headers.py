"""Which package provides the kernel headers a local build needs, per distro. Pure: a table keyed by target id."""

from __future__ import annotations

import dataclasses
from typing import Optional

# Distros whose kernels come without an installable headers package: a local build cannot work there.
_NO_HEADERS_PACKAGE = ("cos", "bottlerocket", "talos", "flatcar", "minikube")


@dataclasses.dataclass(frozen=True)
class _Recipe:
    installer: str
    package: str
    per_release: bool  # the package name ends in the exact kernel release


_DEB = _Recipe("apt-get install", "linux-headers-", True)
_RPM = _Recipe("dnf install", "kernel-devel-", True)
_YUM = _Recipe("yum install", "kernel-devel-", True)
_UEK = _Recipe("dnf install", "kernel-uek-devel-", True)
_SUSE = _Recipe("zypper install", "kernel-default-devel", False)

_RECIPES = {
    "debian": _DEB,
    "rhel": _RPM,
    "centos": _YUM,
    "rocky": _RPM,
    "almalinux": _RPM,
    "fedora": _RPM,
    "ol": _RPM,
    "amazonlinux": _YUM,
    "amazonlinux2": _YUM,
    "amazonlinux2022": _RPM,
    "amazonlinux2023": _RPM,
    "opensuse": _SUSE,
    "sles": _SUSE,
    "arch": _Recipe("pacman -S", "linux-headers", False),
    "photon": _Recipe("tdnf install", "linux-devel", False),
}


def _recipe(target_id: str, kernel_release: str) -> Optional[_Recipe]:
    if target_id.startswith("ubuntu-") or target_id == "ubuntu":
        return _DEB
    if target_id == "ol" and "uek" in kernel_release:
        return _UEK
    if target_id.startswith("opensuse"):
        return _SUSE
    if target_id.startswith("amazonlinux") and target_id not in _RECIPES:
        return _RPM
    return _RECIPES.get(target_id)


def headers_hint(target_id: str, kernel_release: str) -> str:
    """What to install so that /lib/modules/<kernel_release>/build exists, for the running kernel's release."""
    if target_id in _NO_HEADERS_PACKAGE:
        return (
            f"{target_id} ships no kernel headers package, so the driver cannot be built on this host; "
            "use the modern_ebpf driver (--type modern_ebpf) or a prebuilt driver from a driver repository"
        )
    recipe = _recipe(target_id, kernel_release)
    if recipe is None:
        return (
            f"install your distribution's kernel headers (or kernel-devel) package for {kernel_release}, so that "
            f"/lib/modules/{kernel_release}/build exists; or use the modern_ebpf driver or a prebuilt driver"
        )
    if recipe.per_release:
        return (
            f"install the kernel headers: {recipe.installer} {recipe.package}{kernel_release} "
            f"(that is, {recipe.package}$(uname -r))"
        )
    return (
        f"install the kernel headers: {recipe.installer} {recipe.package} "
        f"(it must match the running kernel {kernel_release}; reboot after a kernel update)"
    )
