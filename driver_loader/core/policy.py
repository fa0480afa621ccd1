"""The acquisition policy: may this artifact be used, which kernel is judged, and what are the next steps.

Every command asks here and none decides alone: `install`, `download`, `build`, `install --dry-run`, `doctor` and
`inspect`. Pure: the settings, the plan and what the edges observed (the loaded module, cache entries with their
verification records, pins, the ELF verdict) go in; decisions with their reasons come out.

One rule for every source (cache, download, build, `file://`): an artifact is used only when its digest satisfies
the checksum policy and its ELF passes the pre-load checks for the kernel being judged.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Optional, Sequence, Tuple

from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import ExitCode
from driver_loader.core.settings import VerifyPolicy


class Source(str, enum.Enum):
    """Where an artifact comes from."""

    LOADED = "loaded"  # already in the kernel
    CACHE = "cache"
    DOWNLOAD = "download"
    BUILD = "build"
    FILE = "file"  # a file named by the operator (inspect)
    BUILTIN = "builtin"  # modern_ebpf ships inside Falco

    def __str__(self) -> str:
        return self.value


class Evidence(str, enum.Enum):
    """How an artifact's digest was checked when it was obtained. The values are the cache metadata's
    `verified_by` strings, so entries written by earlier releases keep their meaning."""

    PINNED = "sha256-pinned"
    SIDECAR = "sha256-sidecar"
    SUMS = "sha256sums"
    OCI_DIGEST = "sha256-oci-digest"  # the layer digest of the manifest pulled from an OCI registry
    LOCAL_BUILD = "local-build"
    RECORDED = "none (recorded digest)"
    UNCHECKED = "none (verification off)"

    def __str__(self) -> str:
        return self.value

    @property
    def checked(self) -> bool:
        """True when the bytes were compared with a digest someone else vouched for, or built here."""
        return self in (Evidence.PINNED, Evidence.SIDECAR, Evidence.SUMS, Evidence.OCI_DIGEST, Evidence.LOCAL_BUILD)

    @classmethod
    def parse(cls, value: str) -> Optional[Evidence]:
        try:
            return cls(value)
        except ValueError:
            return None


@dataclasses.dataclass(frozen=True)
class Pin:
    """A digest the operator pinned for one artifact: `--sha256`, or its line in `--checksums FILE`."""

    sha256: str
    origin: str


@dataclasses.dataclass(frozen=True)
class ChecksumRecord:
    """What is known of an artifact's bytes: their digest and how that digest was checked when obtained."""

    sha256: str
    evidence: Evidence
    expected_from: str = ""  # where the expected digest came from, for messages
    signed_by: str = ""  # the id of the key whose signature was verified when it was obtained, if any


@dataclasses.dataclass(frozen=True)
class ElfVerdict:
    """The pre-load checks' outcome for the kernel being judged."""

    ok: bool
    reasons: Tuple[str, ...] = ()
    hint: str = ""


@dataclasses.dataclass(frozen=True)
class Decision:
    """May the artifact be used; if not, why, and what to do. `evidence` is how it counts as verified."""

    usable: bool
    reason: str
    hint: str = ""
    evidence: Optional[Evidence] = None
    warning: str = ""  # usable, but the operator should know (no checksum published)


# ---------------------------------------------------------------------------------------------------------------------
# May this artifact be used?

STRICT_HINT = ("pin it with --sha256 or --checksums, publish a .sha256 sidecar or SHA256SUMS beside it, "
               "or use --verify auto")


SIGNATURE_HINT = ("publish it signed by that key (falco-driver-loader publish --sign-key, or cosign sign-blob for a "
                  "file beside its .sig), or drop --verify-key to accept unsigned artifacts")


def signature_refusal(record: ChecksumRecord, signer: Optional[str]) -> Optional[Decision]:
    """With a required signing key (`--verify-key`), an artifact is usable only when a signature by that key was
    verified when it was obtained. A driver built on this node from its own sources needs none: it never travelled."""
    if signer is None or record.evidence is Evidence.LOCAL_BUILD or record.signed_by == signer:
        return None
    other = f" (it was verified against key {record.signed_by})" if record.signed_by else ""
    return Decision(False, f"sha256 {record.sha256} has no valid signature by the required key {signer}{other}",
                    hint=SIGNATURE_HINT)


def checksum_decision(record: ChecksumRecord, *, policy: VerifyPolicy, pin: Optional[Pin],
                      signer: Optional[str] = None) -> Decision:
    """Does the artifact's digest satisfy the checksum policy, and carry the required signature? A pin wins over
    every other source of a digest; a required signature is required whatever the checksum policy."""
    refusal = signature_refusal(record, signer)
    if refusal is not None:
        return refusal
    if policy is VerifyPolicy.OFF:
        return Decision(True, "checksums are not checked (--verify off)", evidence=Evidence.UNCHECKED)
    if pin is not None:
        if record.sha256 != pin.sha256.lower():
            return Decision(
                False,
                f"sha256 {record.sha256} does not match the digest pinned by {pin.origin} ({pin.sha256.lower()})",
                hint="use the artifact the pin describes, or correct the pin",
            )
        return Decision(True, f"matches the digest pinned by {pin.origin}", evidence=Evidence.PINNED)
    if record.evidence.checked:
        source = f" ({record.expected_from})" if record.expected_from else ""
        return Decision(True, f"verified by {record.evidence}{source}", evidence=record.evidence)
    if policy is VerifyPolicy.STRICT:
        return Decision(
            False,
            f"never checked against a published digest ({record.evidence}), which --verify strict requires",
            hint=STRICT_HINT,
        )
    return Decision(True, "no checksum is published for it; its digest was recorded", evidence=record.evidence,
                    warning="the repository publishes no checksum for this artifact; recorded its digest")


def publish_decision(record: ChecksumRecord, *, pin: Optional[Pin], signer: Optional[str] = None) -> Decision:
    """May this artifact be published to a registry? Its layer digest becomes every reader's checksum there (and
    satisfies their --verify strict), so only bytes that were checked may go: the strict rule, whatever --verify
    says here. A digest that was only recorded would otherwise come out of the registry looking verified. A valid
    signature by the required key vouches for the bytes as a published checksum would."""
    vouched = signer is not None and record.signed_by == signer
    decision = checksum_decision(record, policy=VerifyPolicy.AUTO if vouched else VerifyPolicy.STRICT, pin=pin,
                                 signer=signer)
    if not decision.usable and decision.hint == STRICT_HINT:
        return dataclasses.replace(decision, reason=f"{decision.reason.replace('--verify strict', 'publishing')}",
                                   hint="pin it with --sha256 or --checksums, or fetch it from a repository that "
                                        "publishes its checksum, then publish it")
    return decision


def checksum_required_before_download(policy: VerifyPolicy, pin: Optional[Pin],
                                      published: bool) -> Optional[Decision]:
    """Refuse a download before it starts when its result could never be used. None means go ahead."""
    if policy is VerifyPolicy.STRICT and pin is None and not published:
        return Decision(False, "no checksum is published for it and --verify strict requires one", hint=STRICT_HINT)
    return None


def artifact_decision(record: ChecksumRecord, elf: ElfVerdict, *, policy: VerifyPolicy,
                      pin: Optional[Pin], signer: Optional[str] = None) -> Decision:
    """The one rule, for every source: the checksum satisfies the policy (with the required signature) and the ELF
    fits the kernel judged."""
    checksum = checksum_decision(record, policy=policy, pin=pin, signer=signer)
    if not checksum.usable:
        return checksum
    if not elf.ok:
        first = elf.reasons[0] if elf.reasons else "it failed the pre-load checks"
        more = f" (and {len(elf.reasons) - 1} more problem{'s' if len(elf.reasons) > 2 else ''})" \
            if len(elf.reasons) > 1 else ""
        return Decision(False, f"{first}{more}", hint=elf.hint)
    return checksum


# ---------------------------------------------------------------------------------------------------------------------
# Which kernel is judged?


@dataclasses.dataclass(frozen=True)
class JudgedKernel:
    """The kernel an artifact is judged against. Only the running kernel's live state (module support, signature
    enforcement, /proc/config.gz) can be read; for another release those checks are about files, not state."""

    release: str
    running: bool


def judged_kernel(requested_release: Optional[str], running_release: str) -> JudgedKernel:
    release = requested_release or running_release
    return JudgedKernel(release, release == running_release)


# ---------------------------------------------------------------------------------------------------------------------
# What is the next step?


def needs_driver_version(driver_type: DriverType) -> bool:
    """modern_ebpf ships inside Falco: no artifact, so no driver version, no cache and no network."""
    return driver_type.has_artifact


class StepKind(str, enum.Enum):
    KEEP_LOADED = "keep the loaded module"
    REPLACE_LOADED = "unload the loaded module"
    USE_BUILTIN = "use the modern_ebpf driver built into Falco"
    USE_CACHE = "use the cache"
    DOWNLOAD = "download"
    OTHER_VERSIONS = "other versions in range"
    BUILD = "build"
    FAIL = "fail"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class CachedArtifact:
    """A cache entry for one of the plan's candidates, as observed (re-hashed) on disk."""

    path: str
    record: ChecksumRecord
    pin: Optional[Pin] = None


@dataclasses.dataclass(frozen=True)
class LoadedModule:
    name: str
    version: Optional[str]
    fits: bool


@dataclasses.dataclass(frozen=True)
class Observations:
    """What the edges saw before anything changes."""

    loaded: Optional[LoadedModule] = None
    cached: Tuple[CachedArtifact, ...] = ()


@dataclasses.dataclass(frozen=True)
class Step:
    kind: StepKind
    detail: str = ""
    path: Optional[str] = None  # USE_CACHE: the entry


@dataclasses.dataclass(frozen=True)
class CacheJudgement:
    entry: CachedArtifact
    decision: Decision


@dataclasses.dataclass(frozen=True)
class AcquisitionPlan:
    steps: Tuple[Step, ...]
    cache: Tuple[CacheJudgement, ...]  # every observed entry, with why it is (not) used

    @property
    def done_without_artifact(self) -> bool:
        return bool(self.steps) and self.steps[0].kind in (StepKind.KEEP_LOADED, StepKind.USE_BUILTIN)

    def kinds(self) -> Tuple[StepKind, ...]:
        return tuple(step.kind for step in self.steps)


def acquisition_steps(
    driver_type: DriverType,
    observed: Observations,
    *,
    policy: VerifyPolicy,
    download: bool,
    compile: bool,
    version_fallback: bool,
    signer: Optional[str] = None,
) -> AcquisitionPlan:
    """The ordered steps: keep the loaded module, use the cache, download, other versions in range, build.
    Each later step runs only when the earlier ones produced nothing usable."""
    if driver_type is DriverType.MODERN_EBPF:
        return AcquisitionPlan((Step(StepKind.USE_BUILTIN),), ())
    steps = []
    loaded = observed.loaded
    if driver_type is DriverType.KMOD and loaded is not None:
        if loaded.fits:
            return AcquisitionPlan((Step(StepKind.KEEP_LOADED, f"{loaded.name} {loaded.version}"),), ())
        steps.append(Step(StepKind.REPLACE_LOADED, f"{loaded.name} {loaded.version or '(no version)'}"))
    judged = tuple(CacheJudgement(entry, checksum_decision(entry.record, policy=policy, pin=entry.pin,
                                                                signer=signer))
                   for entry in observed.cached)
    steps += [Step(StepKind.USE_CACHE, j.decision.reason, j.entry.path) for j in judged if j.decision.usable]
    if download:
        steps.append(Step(StepKind.DOWNLOAD))
        if version_fallback:
            steps.append(Step(StepKind.OTHER_VERSIONS))
    if compile:
        steps.append(Step(StepKind.BUILD))
    if not any(s.kind in (StepKind.USE_CACHE, StepKind.DOWNLOAD, StepKind.BUILD) for s in steps):
        refused = [f"{j.entry.path}: {j.decision.reason}" for j in judged if not j.decision.usable]
        steps.append(Step(StepKind.FAIL, "; ".join(refused) if refused else
                          "nothing usable is cached, and download and compile are both disabled"))
    return AcquisitionPlan(tuple(steps), judged)


def refused_cache_entries(plan: AcquisitionPlan) -> Sequence[CacheJudgement]:
    return [j for j in plan.cache if not j.decision.usable]


def nothing_usable_exit_code(plan: AcquisitionPlan) -> ExitCode:
    """When every step came up empty: a verification failure if a cached artifact was there but refused,
    otherwise no driver."""
    return ExitCode.VERIFICATION if refused_cache_entries(plan) else ExitCode.NO_DRIVER
