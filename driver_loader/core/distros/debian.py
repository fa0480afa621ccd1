"""Debian: `uname -r` carries the ABI (6.1.0-13-amd64); artifacts are named after the package version found in
`uname -v` (6.1.55-1) plus the flavour suffix (-amd64, -cloud-amd64, -rt-arm64). Also recognised by
etc/debian_version."""

from __future__ import annotations

import re
from typing import Optional

from driver_loader.core.distros.base import (
    DEB,
    Distro,
    HeadersRecipe,
    HostFacts,
    Naming,
    generic_naming,
    legacy_kernel_version,
)
from driver_loader.core.kernelrelease import KernelRelease, parse_kernel_release

# Patterns as strings, compiled (and cached by re) on first use: only the host's own distro needs them.
_PACKAGE_VERSION = r"\d+\.\d+\.\d+-\d+"
_ARCH_EXTRA = r"-?(rt-|cloud-|)(amd64|arm64)"


def _rewritten_release(kernel_version: str, extra_source: str) -> Optional[str]:
    package = re.search(_PACKAGE_VERSION, kernel_version, re.ASCII)
    if not package:
        return None
    extra = re.search(_ARCH_EXTRA, extra_source)
    return package.group(0) + (f"-{extra.group(1)}{extra.group(2)}" if extra else "")


class Debian(Distro):
    name = "debian"
    ids = ("debian",)
    markers = ("etc/debian_version",)
    legacy_markers = markers
    marker_priority = 10

    def resolve(self, facts: HostFacts, kr: KernelRelease) -> Naming:
        release = _rewritten_release(facts.kernel_version, kr.fullextraversion)
        if release is None:
            return generic_naming("debian", facts, kr)
        return Naming("debian", str(parse_kernel_release(release)) or release, "1")

    def legacy(self, facts: HostFacts) -> Naming:
        release = _rewritten_release(facts.kernel_version, facts.kernel_release)
        return Naming("debian", release or facts.kernel_release, legacy_kernel_version(facts.kernel_version))

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return DEB


DISTRO = Debian()
