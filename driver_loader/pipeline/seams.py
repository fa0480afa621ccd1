"""The seams the install pipeline takes: what it needs of the fetcher, the builder, the cache and the command
runner. The real edges satisfy these Protocols; tests pass fakes that do too, and mypy checks both."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Optional, Protocol, Sequence

# The cache's seam lives with the cache, because the fetcher and the builder take it too.
from driver_loader.artifacts.cache import Cache
from driver_loader.core.plan import Plan
from driver_loader.core.settings import Settings

if TYPE_CHECKING:
    from driver_loader.build.local_build import BuildResult
    from driver_loader.net.fetch import FetchResult
    from driver_loader.system.runner import CommandResult


class Fetch(Protocol):
    """Gets a verified prebuilt artifact into the cache (net/fetch.py's fetch_artifact)."""

    def __call__(self, plan: Plan, settings: Settings, *, cache: Cache,
                 progress: Optional[Callable[[int, Optional[int]], None]] = None) -> FetchResult: ...


class Build(Protocol):
    """Builds the artifact locally into the cache (build/local_build.py's build_artifact)."""

    def __call__(self, plan: Plan, settings: Settings, *, cache: Cache,
                 progress: Optional[Callable[[str], None]] = None) -> BuildResult: ...


class Runner(Protocol):
    """Runs external commands (system/runner.py's CommandRunner): depmod for --persist, dkms and make."""

    def which(self, program: str) -> Optional[str]: ...

    def run(self, argv: Sequence[str], *, timeout: float, env: Optional[Mapping[str, str]] = None,
            cwd: Optional[str] = None) -> CommandResult: ...


# The kernel seam is KernelModules itself: it takes its /proc, /sys and /dev roots and its syscalls (finit_module,
# delete_module) as arguments, which is where tests put a fake kernel.
