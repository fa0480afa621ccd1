"""CentOS: generic naming; also recognised by etc/centos-release (tried before RHEL's etc/redhat-release, which
CentOS has too)."""

from __future__ import annotations

from typing import Optional

from driver_loader.core.distros.base import YUM, Distro, HeadersRecipe


class CentOS(Distro):
    name = "centos"
    ids = ("centos",)
    markers = ("etc/centos-release",)
    legacy_markers = markers
    marker_priority = 20

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return YUM


DISTRO = CentOS()
