"""Arch Linux: generic naming; one headers package for the installed kernel."""

from __future__ import annotations

from typing import Optional

from driver_loader.core.distros.base import Distro, HeadersRecipe

_PACMAN = HeadersRecipe("pacman -S", "linux-headers", False)


class Arch(Distro):
    name = "arch"
    ids = ("arch",)

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return _PACMAN


DISTRO = Arch()
