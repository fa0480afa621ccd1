"""Amazon Linux: the target encodes the major release."""

from __future__ import annotations

from typing import Optional

from driver_loader.core.distros.base import (
    DNF,
    YUM,
    Distro,
    HeadersRecipe,
    HostFacts,
    Naming,
    generic_legacy_naming,
    generic_naming,
    required,
)
from driver_loader.core.kernelrelease import KernelRelease

_TARGETS = {"2": "amazonlinux2", "2022": "amazonlinux2022", "2023": "amazonlinux2023"}
_YUM_TARGETS = ("amazonlinux", "amazonlinux2")  # Amazon Linux 1 and 2; later releases have dnf


def _target(version_id: str) -> str:
    return _TARGETS.get(version_id, "amazonlinux")


class AmazonLinux(Distro):
    name = "amzn"
    ids = ("amzn",)

    def resolve(self, facts: HostFacts, kr: KernelRelease) -> Naming:
        return generic_naming(_target(required(facts, "VERSION_ID")), facts, kr)

    def legacy(self, facts: HostFacts) -> Naming:
        return generic_legacy_naming(_target(facts.field("VERSION_ID") or ""), facts)

    def owns_target(self, target_id: str) -> bool:
        return target_id.startswith("amazonlinux")

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return YUM if target_id in _YUM_TARGETS else DNF


DISTRO = AmazonLinux()
