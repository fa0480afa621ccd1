"""SUSE Linux Enterprise Server: generic naming; headers from zypper, one package for the installed kernel."""

from __future__ import annotations

from typing import Optional

from driver_loader.core.distros.base import ZYPPER, Distro, HeadersRecipe


class SLES(Distro):
    name = "sles"
    ids = ("sles",)

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return ZYPPER


DISTRO = SLES()
