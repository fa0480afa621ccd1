"""openSUSE (Leap, Tumbleweed, MicroOS...): generic naming, the target being the os-release ID; headers from
zypper, one package for the installed kernel."""

from __future__ import annotations

from typing import Optional

from driver_loader.core.distros.base import ZYPPER, Distro, HeadersRecipe


class OpenSUSE(Distro):
    name = "opensuse"
    ids = ("opensuse", "opensuse-leap", "opensuse-tumbleweed", "opensuse-microos", "opensuse-slowroll")

    def owns_target(self, target_id: str) -> bool:
        return target_id.startswith("opensuse")

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return ZYPPER


DISTRO = OpenSUSE()
