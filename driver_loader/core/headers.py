"""What to install so that a local build finds the kernel headers: the message, from the recipe of the distro that
produced the target id (each distro module carries its own). Pure."""

from __future__ import annotations

from driver_loader.core.distros import distro_for_target
from driver_loader.core.distros.base import NO_HEADERS_PACKAGE


def headers_hint(target_id: str, kernel_release: str) -> str:
    """What to install so that /lib/modules/<kernel_release>/build exists, for the running kernel's release."""
    distro = distro_for_target(target_id)
    recipe = distro.headers(target_id, kernel_release) if distro is not None else None
    if recipe is NO_HEADERS_PACKAGE:
        return (
            f"{target_id} ships no kernel headers package, so the driver cannot be built on this host; "
            "use the modern_ebpf driver (--type modern_ebpf) or a prebuilt driver from a driver repository"
        )
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
