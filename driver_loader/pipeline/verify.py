"""Verifying an artifact the same way for every command: open it once, re-hash the bytes read from that descriptor,
inspect the ELF, run the pre-load checks against the kernel being judged, and ask the policy whether it may be used.

`install` loads the very descriptor that was verified; `download` and `build` only keep what passes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

from driver_loader.artifacts.signature import required_signer
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import LoaderError, VerificationError
from driver_loader.core.naming import cache_location
from driver_loader.core.plan import Plan
from driver_loader.core.policy import (
    ChecksumRecord,
    Decision,
    ElfVerdict,
    Evidence,
    JudgedKernel,
    Pin,
    Source,
    VerifyPolicy,
    artifact_decision,
    judged_kernel,
)
from driver_loader.core.settings import Settings
from driver_loader.output.log import get_logger
from driver_loader.system.files import read_fd

if TYPE_CHECKING:
    from driver_loader.build.local_build import BuildResult
    from driver_loader.core.artifact_facts import ArtifactInfo
    from driver_loader.core.checks import Finding
    from driver_loader.core.kernel import RunningKernel
    from driver_loader.net.fetch import FetchResult

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class Artifact:
    """An artifact on disk, with how its digest was checked when it was obtained."""

    path: str
    sha256: str
    source: Source
    evidence: Evidence
    expected_from: str = ""
    signed_by: str = ""

    @property
    def record(self) -> ChecksumRecord:
        return ChecksumRecord(self.sha256, self.evidence, self.expected_from, self.signed_by)

    @classmethod
    def cached(cls, path: str, record: ChecksumRecord) -> Artifact:
        return cls(path, record.sha256, Source.CACHE, record.evidence, record.expected_from, record.signed_by)

    @classmethod
    def fetched(cls, result: FetchResult) -> Artifact:
        """What the fetcher returned: a reused cache entry or a download, with how it was checked."""
        source = Source.CACHE if result.source == Source.CACHE.value else Source.DOWNLOAD
        return cls(result.path, result.sha256, source, Evidence.parse(result.verified_by) or Evidence.RECORDED,
                   result.url, result.signed_by)

    @classmethod
    def built(cls, result: BuildResult) -> Artifact:
        return cls(result.path, result.sha256, Source.BUILD,
                   Evidence.parse(result.verified_by) or Evidence.LOCAL_BUILD)


@dataclasses.dataclass(frozen=True)
class Verified:
    """An artifact opened once, whose bytes passed every check; `fd` is what gets loaded (the caller closes it)."""

    fd: int
    elf: bytes
    info: ArtifactInfo
    compressed: bool
    warnings: Tuple[str, ...]
    decision: Decision


def running_release() -> str:
    return os.uname().release


def judge(release: str, running: Optional[str] = None) -> JudgedKernel:
    return judged_kernel(release, running if running is not None else running_release())


def read_judged_kernel(release: str, arch: str, settings: Settings, *, proc_root: str = "/proc",
                       sys_root: str = "/sys", running: Optional[str] = None) -> RunningKernel:
    """The facts of the kernel being judged: the running one, or the release that was named."""
    from driver_loader.host.kernel_facts import kernel_roots, read_running_kernel

    judged = judge(release, running)
    return read_running_kernel(judged.release, arch, proc_root=proc_root, sys_root=sys_root,
                               roots=kernel_roots(settings.host_root), running=judged.running)


def elf_findings(info: ArtifactInfo, plan: Plan, settings: Settings, kernel: RunningKernel) -> List[Finding]:
    """The pre-load checks for this plan's driver type, range and Falco's API/schema, on the kernel judged."""
    from driver_loader.core.checks import Finding, check_artifact

    findings = list(check_artifact(
        info, kernel, driver_type=plan.driver_type, compatible=plan.compatible,
        required_api=plan.requirement.api_version, required_schema=plan.requirement.schema_version,
    ))
    if plan.driver_type is DriverType.KMOD and info.name != settings.kernel_module_name:
        findings.append(Finding(
            False, "module_name",
            f"module calls itself {info.name!r}, expected {settings.kernel_module_name!r}",
            hint="use the artifact built for this driver name (--name)",
        ))
    return findings


def verdict_of(findings: List[Finding]) -> ElfVerdict:
    failed = [f for f in findings if not f.ok]
    return ElfVerdict(not failed, tuple(f.message for f in failed),
                      "; ".join(dict.fromkeys(f.hint for f in failed if f.hint)))


def open_verified(artifact: Artifact, plan: Plan, settings: Settings, kernel: RunningKernel,
                  pin: Optional[Pin]) -> Verified:
    """Open the artifact once and judge the bytes read from that descriptor: their digest is the one recorded
    when it was obtained, the policy accepts its checksum, and its ELF passes every pre-load check. Raises
    VerificationError saying why otherwise; nothing is loaded or handed over."""
    from driver_loader.artifacts.elf import compression_of, decompress, inspect_artifact

    fd = open_artifact(artifact.path)
    try:
        raw = read_artifact(fd, artifact.path, artifact.sha256, tried=[f"{artifact.source}: verified by "
                                                                      f"{artifact.evidence}"])
        policy = VerifyPolicy(settings.verify.policy)
        elf = decompress(raw, filename=artifact.path)
        info = inspect_artifact(elf, filename=artifact.path)
        findings = elf_findings(info, plan, settings, kernel)
        decision = artifact_decision(artifact.record, verdict_of(findings), policy=policy, pin=pin,
                                     signer=required_signer(settings))
        if not decision.usable:
            raise VerificationError(
                f"{artifact.path} may not be used: {decision.reason}; nothing was loaded",
                tried=[f"{f.code}: {f.message}" for f in findings if not f.ok]
                or [f"{artifact.source}: {decision.reason}"],
                hint=decision.hint,
            )
        for finding in findings:
            if finding.warning:
                log.warning(finding.message, hint=finding.hint)
        if decision.warning:
            log.warning(decision.warning, path=artifact.path, sha256=artifact.sha256)
        log.info("artifact passed the pre-load checks", path=artifact.path, version=info.driver_version,
                 verified_by=str(decision.evidence))
        return Verified(fd, elf, info, compression_of(raw) is not None,
                        tuple(f.message for f in findings if f.warning), decision)
    except BaseException:
        os.close(fd)
        raise


def open_artifact(path: str) -> int:
    """A descriptor on the artifact that follows no link: what is judged through it is what gets loaded or pushed."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise VerificationError(f"cannot open {path}: {exc.strerror or exc}",
                                hint="the artifact vanished or was replaced by a link; run again") from None


def read_artifact(fd: int, path: str, sha256: str, *, tried: Sequence[str] = ()) -> bytes:
    """The artifact's bytes through `fd`, at most MAX_ARTIFACT_SIZE, which must still hash to `sha256`, the digest
    the policy accepted when it was obtained."""
    import hashlib

    from driver_loader.artifacts.elf import MAX_ARTIFACT_SIZE

    raw = read_fd(fd, MAX_ARTIFACT_SIZE + 1)
    if len(raw) > MAX_ARTIFACT_SIZE:
        raise VerificationError(f"{path} is larger than {MAX_ARTIFACT_SIZE} bytes",
                                hint="a Falco driver is a few MiB; this is not a driver artifact")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise VerificationError(f"{path} changed after it was verified (sha256 {digest}, expected {sha256})",
                                tried=tried, hint="something modified it; remove the file and run again")
    return raw


def pins(settings: Settings) -> Any:
    """The operator's pins (--sha256, --checksums FILE), read without the network."""
    from driver_loader.net.checksums import ChecksumResolver

    def no_documents(url: str) -> Optional[str]:
        raise AssertionError("pins never need the network")

    return ChecksumResolver(settings.verify, no_documents)


def keep_only_if_verified(artifact: Artifact, plan: Plan, settings: Settings, cache: Any) -> Verified:
    """For commands that load nothing (download, build): the same verification install makes, judged against the
    named kernel (or the running one). What fails it is removed from the cache, so no later run is handed it."""
    kernel = read_judged_kernel(plan.kernel_release, plan.arch, settings)
    pin = pins(settings).pin(cache_location(artifact.path))
    try:
        verified = open_verified(artifact, plan, settings, kernel, pin)
    except LoaderError as refused:
        cache.remove(artifact.path)
        raise VerificationError(f"{refused.message}; it was removed from the cache", tried=refused.tried,
                                hint=refused.hint) from None
    os.close(verified.fd)
    return verified
