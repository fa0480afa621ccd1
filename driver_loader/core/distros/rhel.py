"""Red Hat Enterprise Linux: generic naming (no prebuilt drivers upstream); also recognised by
etc/redhat-release."""

from __future__ import annotations

from typing import Optional

from driver_loader.core.distros.base import DNF, Distro, HeadersRecipe


class RedHatEnterpriseLinux(Distro):
    name = "rhel"
    ids = ("rhel",)
    markers = ("etc/redhat-release",)
    legacy_markers = markers
    marker_priority = 30

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return DNF


DISTRO = RedHatEnterpriseLinux()
