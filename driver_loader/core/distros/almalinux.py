"""AlmaLinux: generic naming; kernel headers from dnf."""

from __future__ import annotations

from typing import Optional

from driver_loader.core.distros.base import DNF, Distro, HeadersRecipe


class AlmaLinux(Distro):
    name = "almalinux"
    ids = ("almalinux",)

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return DNF


DISTRO = AlmaLinux()
