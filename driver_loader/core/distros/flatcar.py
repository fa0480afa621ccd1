"""Flatcar: artifacts are named after the OS version (VERSION_ID), not the kernel release; no headers package."""

from __future__ import annotations

import re
from typing import Optional, Tuple

from driver_loader.core.distros.base import (
    NO_HEADERS_PACKAGE,
    Distro,
    HeadersRecipe,
    HostFacts,
    Naming,
    generic_kernel_version,
    legacy_kernel_version,
    required,
)
from driver_loader.core.kernelrelease import KernelRelease

# Patterns as strings, compiled (and cached by re) on first use: only the host's own distro needs them.
_XYZ = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$"


class Flatcar(Distro):
    name = "flatcar"
    ids = ("flatcar",)

    def resolve(self, facts: HostFacts, kr: KernelRelease) -> Naming:
        # falcoctl panics on a VERSION_ID that is not x.y.z; we use it verbatim, as the legacy loader did.
        version_id = required(facts, "VERSION_ID").strip()
        return Naming("flatcar", version_id, generic_kernel_version(facts.kernel_version))

    def notes(self, facts: HostFacts) -> Tuple[str, ...]:
        version_id = (facts.field("VERSION_ID") or "").strip()
        if version_id and not re.match(_XYZ, version_id, re.ASCII):
            return (f"flatcar VERSION_ID {version_id!r} is not x.y.z; using it verbatim",)
        return ()

    def legacy(self, facts: HostFacts) -> Naming:
        return Naming("flatcar", facts.field("VERSION_ID") or "", legacy_kernel_version(facts.kernel_version))

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return NO_HEADERS_PACKAGE


DISTRO = Flatcar()
