"""Ubuntu: the target carries the kernel flavour (ubuntu-aws, ubuntu-generic); the kernel version part is the
build number from `uname -v` (`#26~22.04.1-Ubuntu SMP ...` gives 26~22.04.1)."""

from __future__ import annotations

import re
from typing import Optional

from driver_loader.core.distros.base import DEB, Distro, HeadersRecipe, HostFacts, Naming, legacy_kernel_version
from driver_loader.core.kernelrelease import KernelRelease

# Patterns as strings, compiled (and cached by re) on first use: only the host's own distro needs them.
_FLAVOUR = r"-([a-zA-Z]+)(-.*)?$"
_LEGACY_TILDE_VERSION = r"^#[0-9]+~[^-]*-Ubuntu .*$"
_LEGACY_TILDE_BUILD = r"#([^-\\ ]*).*"


def _target(source: str) -> str:
    match = re.search(_FLAVOUR, source)
    return f"ubuntu-{match.group(1) if match else 'generic'}"


class Ubuntu(Distro):
    name = "ubuntu"
    ids = ("ubuntu",)

    def resolve(self, facts: HostFacts, kr: KernelRelease) -> Naming:
        build = facts.kernel_version.lstrip("#").split(" ", 1)[0]
        if build.endswith("-Ubuntu"):
            build = build[: -len("-Ubuntu")]
        return Naming(_target(kr.fullextraversion), str(kr) or facts.kernel_release, build)

    def legacy(self, facts: HostFacts) -> Naming:
        # The legacy loader kept `~` builds only in the `#N~X-Ubuntu ...` form, and `#N` digits otherwise.
        if re.match(_LEGACY_TILDE_VERSION, facts.kernel_version):
            version = re.sub(_LEGACY_TILDE_BUILD, r"\1", facts.kernel_version)
        else:
            version = legacy_kernel_version(facts.kernel_version)
        return Naming(_target(facts.kernel_release), facts.kernel_release, version)

    def owns_target(self, target_id: str) -> bool:
        return target_id == "ubuntu" or target_id.startswith("ubuntu-")

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return DEB


DISTRO = Ubuntu()
