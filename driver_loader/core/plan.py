"""The pure core: host facts and settings in, a plan out.

The plan names the target, the fixed kernel strings, the candidate artifacts in try order (falcoctl's file name
first, the legacy loader's second when it differs), their URLs and cache paths. No I/O happens here.
"""

from __future__ import annotations

import functools
from typing import List, NamedTuple, Optional, Sequence, Tuple

from driver_loader.core.distros import UNDETERMINED, discover
from driver_loader.core.distros.base import DistroTarget, HostFacts, Naming
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import UnsupportedHostError
from driver_loader.core.kernelrelease import parse_kernel_release
from driver_loader.core.naming import Candidate, artifact_filename, artifact_url, build_candidates, unsafe_reason
from driver_loader.core.oci import artifact_reference, is_oci_reference
from driver_loader.core.settings import Settings
from driver_loader.core.versions import CompatibleRange, compatible_range, publishes_ebpf_probe


class DriverRequirement(NamedTuple):  # not a frozen dataclass: defined at every start, and ten times cheaper
    """The driver Falco wants: its default version, and the API/schema minimums when Falco told us."""

    version: str
    source: str
    api_version: Optional[str] = None
    schema_version: Optional[str] = None


class Plan(NamedTuple):  # not a frozen dataclass: defined at every start, and ten times cheaper
    settings: Settings
    driver_type: DriverType
    requirement: DriverRequirement
    compatible: CompatibleRange
    arch: str
    target: DistroTarget
    kernel_release: str
    kernel_version: str
    filenames: Tuple[str, ...]
    candidates: Tuple[Candidate, ...]
    refusals: Tuple[str, ...]

    @property
    def driver_version(self) -> str:
        return self.requirement.version

    @property
    def target_id(self) -> str:
        return self.target.naming.target_id

    @property
    def fixed_kernel_release(self) -> str:
        return self.target.naming.release

    @property
    def fixed_kernel_version(self) -> str:
        return self.target.naming.version

    def candidates_for_version(self, version: str) -> Tuple[Candidate, ...]:
        """The same artifact names, for another driver version (the version fallback)."""
        return _candidates(self.filenames, self.settings, version, self.arch)


def artifact_location(driver_name: str, repo: str, driver_version: str, arch: str, file_name: str) -> str:
    """Where a repository keeps one artifact: `<repo>/<version>/<arch>/<file>` for http(s) and file://, the
    layout's tag (or pinned digest) for oci:// (docs/oci-layout.md)."""
    if is_oci_reference(repo):
        return artifact_reference(repo, driver_name, driver_version, arch, file_name)
    return artifact_url(repo, driver_version, arch, file_name)


def _candidates(filenames: Sequence[str], settings: Settings, version: str, arch: str) -> Tuple[Candidate, ...]:
    return build_candidates(filenames, settings.cache_dir, version, arch, settings.repos,
                            url=functools.partial(artifact_location, settings.driver_name))


def artifact_filenames(
    driver_name: str, namings: Sequence[Optional[Naming]], driver_type: DriverType
) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """File names in try order, without duplicates, and the reasons any naming was refused."""
    names: list = []
    refusals: list = []
    for label, naming in zip(("falcoctl", "legacy"), namings):
        if naming is None:
            continue
        reason = next(
            (
                r
                for r in (
                    unsafe_reason("target id", naming.target_id),
                    unsafe_reason("kernel release", naming.release),
                    unsafe_reason("kernel version", naming.version),
                )
                if r
            ),
            None,
        )
        if reason:
            refusals.append(f"{label} name refused: {reason}")
            continue
        if naming.target_id == UNDETERMINED:
            refusals.append("the target is undetermined, so no prebuilt artifact can match")
            continue
        name = artifact_filename(driver_name, naming.target_id, naming.release, naming.version, driver_type.extension)
        if name not in names:
            names.append(name)
    return tuple(names), tuple(refusals)


def make_plan(
    facts: HostFacts,
    settings: Settings,
    driver_type: DriverType,
    requirement: DriverRequirement,
    target: Optional[DistroTarget] = None,
) -> Plan:
    target = target or discover(facts)
    refusals: Tuple[str, ...] = ()
    if driver_type.has_artifact:
        filenames, refusals = artifact_filenames(settings.driver_name, (target.naming, target.legacy), driver_type)
        version_reason = unsafe_reason("driver version", requirement.version)
        if version_reason:
            filenames, refusals = (), refusals + (version_reason,)
        if driver_type is DriverType.EBPF and not publishes_ebpf_probe(requirement.version):
            refusals += (f"driver {requirement.version} publishes no legacy eBPF probe (only drivers < 10.0.0 do)",)
            filenames = ()
    else:
        filenames = ()
    candidates = _candidates(filenames, settings, requirement.version, facts.arch)
    return Plan(
        settings=settings,
        driver_type=driver_type,
        requirement=requirement,
        compatible=compatible_range(requirement.version, exact=driver_type is DriverType.EBPF),
        arch=facts.arch,
        target=target,
        kernel_release=facts.kernel_release,
        kernel_version=facts.kernel_version,
        filenames=filenames,
        candidates=candidates,
        refusals=refusals,
    )


class TypeChoice(NamedTuple):
    selected: Optional[DriverType]
    skipped: Tuple[Tuple[DriverType, str], ...]


def choose_driver_type(
    types: Sequence[DriverType],
    facts: HostFacts,
    target: DistroTarget,
    *,
    modern_ebpf_supported: bool,
    modules_supported: bool = True,
    driver_version: Optional[str] = None,
) -> TypeChoice:
    """The first type in priority order that this host can take, with why each earlier one was skipped."""
    kr = parse_kernel_release(facts.kernel_release)
    skipped: List[Tuple[DriverType, str]] = []
    for kind in types:
        reason = None
        if kind in target.unsupported_types:
            reason = f"{target.naming.target_id} hosts cannot use {kind}"
        elif kind is DriverType.MODERN_EBPF and not modern_ebpf_supported:
            reason = "the running kernel lacks BTF or BPF ring buffer support (modern_ebpf needs >= 5.8 with BTF)"
        elif kind is DriverType.KMOD and not kr.supports_module(facts.arch):
            reason = f"kernel {facts.kernel_release} is older than the module supports on {facts.arch}"
        elif kind is DriverType.KMOD and not modules_supported:
            reason = "the running kernel has no loadable module support (/proc/modules is missing)"
        elif kind is DriverType.EBPF and not kr.supports_probe(facts.arch):
            reason = f"kernel {facts.kernel_release} is older than the eBPF probe supports on {facts.arch}"
        elif kind is DriverType.EBPF and driver_version and not publishes_ebpf_probe(driver_version):
            reason = f"driver {driver_version} publishes no legacy eBPF probe (only drivers < 10.0.0 do)"
        if reason is None:
            return TypeChoice(kind, tuple(skipped))
        skipped.append((kind, reason))
    return TypeChoice(None, tuple(skipped))


def no_supported_type_error(choice: TypeChoice, facts: HostFacts, target: DistroTarget) -> UnsupportedHostError:
    return UnsupportedHostError(
        f"no supported driver found for distro: {target.naming.target_id}, kernelrelease {facts.kernel_release}, "
        f"kernelversion {facts.kernel_version}, arch {facts.arch}",
        tried=[f"{kind}: {reason}" for kind, reason in choice.skipped],
        hint="try another --type; modern_ebpf needs a kernel >= 5.8 with BTF, kmod needs module support",
    )
