"""Rocky Linux: generic naming; kernel headers from dnf."""

from __future__ import annotations

from typing import Optional

from driver_loader.core.distros.base import DNF, Distro, HeadersRecipe


class RockyLinux(Distro):
    name = "rocky"
    ids = ("rocky",)

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return DNF


DISTRO = RockyLinux()
