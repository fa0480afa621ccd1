"""Driver versions and the range of versions compatible with Falco's default driver."""

from __future__ import annotations

import re
from typing import Iterable, List, NamedTuple, Optional

from packaging.version import Version

# A release driver tag: X.Y.Z with optional build metadata (`8.0.0+driver`). Anything else (a commit SHA, `dev`,
# a pre-release such as `0.0.0-local`) is treated as an opaque version that matches only itself.
_RELEASE_TAG = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$",
                          re.ASCII)

# The first driver version that no longer publishes the legacy eBPF probe.
FIRST_WITHOUT_EBPF_PROBE = Version("10.0.0")


def release_core(version: str) -> Optional[Version]:
    """The X.Y.Z of a release driver tag, build metadata dropped; None for opaque versions."""
    version = version.strip()
    if not _RELEASE_TAG.match(version):
        return None
    return Version(version.split("+", 1)[0])


class CompatibleRange(NamedTuple):  # not a frozen dataclass: defined at every start, and ten times cheaper
    """Versions a Falco built against `default` accepts.

    A release default gives the caret range: same major and >= the default, build metadata ignored
    (`8.0.0+driver` accepts `>=8.0.0,<9.0.0`). An opaque default, and the legacy eBPF probe (whose schema rule is
    strict), accept only an exact match.
    """

    default: str
    exact: bool

    def contains(self, version: str) -> bool:
        floor = release_core(self.default)
        if self.exact or floor is None:
            return version.strip() == self.default.strip()
        core = release_core(version)
        return core is not None and core.major == floor.major and core >= floor

    def __contains__(self, version: object) -> bool:  # `version in range`
        return isinstance(version, str) and self.contains(version)

    def __str__(self) -> str:
        core = release_core(self.default)
        if self.exact or core is None:
            return f"=={self.default}"
        return f">={core},<{core.major + 1}.0.0"

    def highest_first(self, versions: Iterable[str]) -> List[str]:
        """The given versions that fall inside the range, best first."""
        inside = {v for v in versions if self.contains(v)}
        return sorted(inside, key=lambda v: (release_core(v) or Version("0"), v), reverse=True)


def compatible_range(default: str, *, exact: bool = False) -> CompatibleRange:
    return CompatibleRange(default=default.strip(), exact=exact or release_core(default) is None)


def publishes_ebpf_probe(version: str) -> bool:
    """Drivers >= 10.0.0 no longer ship the legacy eBPF probe; opaque versions may."""
    core = release_core(version)
    return core is None or core < FIRST_WITHOUT_EBPF_PROBE


def greatest_release(versions: Iterable[str]) -> Optional[str]:
    ranked = [(release_core(v), v) for v in versions]
    ranked = [(core, v) for core, v in ranked if core is not None]
    return max(ranked)[1] if ranked else None
