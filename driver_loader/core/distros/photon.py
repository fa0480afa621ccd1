"""VMware Photon OS: generic naming; one headers package for the installed kernel."""

from __future__ import annotations

from typing import Optional

from driver_loader.core.distros.base import Distro, HeadersRecipe

_TDNF = HeadersRecipe("tdnf install", "linux-devel", False)


class Photon(Distro):
    name = "photon"
    ids = ("photon",)

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return _TDNF


DISTRO = Photon()
