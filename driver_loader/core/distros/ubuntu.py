"""Ubuntu: the target carries the kernel flavour (ubuntu-aws, ubuntu-generic); the kernel version part is the
build number from `uname -v` (`#26~22.04.1-Ubuntu SMP ...` gives 26~22.04.1)."""

from __future__ import annotations

import re
from typing import Optional

from driver_loader.core.distros.base import DEB, Distro, HeadersRecipe, HostFacts, Naming, legacy_kernel_version
from driver_loader.core.kernelrelease import KernelRelease

_FLAVOUR = re.compile(r"-([a-zA-Z]+)(-.*)?$")
_LEGACY_TILDE_VERSION = re.compile(r"^#[0-9]+~[^-]*-Ubuntu .*$")
_LEGACY_TILDE_BUILD = re.compile(r"#([^-\\ ]*).*")


def _target(source: str) -> str:
    match = _FLAVOUR.search(source)
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
        if _LEGACY_TILDE_VERSION.match(facts.kernel_version):
            version = _LEGACY_TILDE_BUILD.sub(r"\1", facts.kernel_version)
        else:
            version = legacy_kernel_version(facts.kernel_version)
        return Naming(_target(facts.kernel_release), facts.kernel_release, version)

    def owns_target(self, target_id: str) -> bool:
        return target_id == "ubuntu" or target_id.startswith("ubuntu-")

    def headers(self, target_id: str, kernel_release: str) -> Optional[HeadersRecipe]:
        return DEB


DISTRO = Ubuntu()
