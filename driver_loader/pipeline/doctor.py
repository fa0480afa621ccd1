"""`doctor`'s observations: read the host, the running kernel, the cache and the repositories through the same
modules and the same policy install uses, changing nothing. The judgement is core/doctor.py's."""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Set, Tuple
from urllib.parse import unquote, urlsplit

from driver_loader.core.doctor import (
    HOST_MOUNTS,
    TOOLS,
    ArtifactProbe,
    Found,
    ModuleState,
    Observations,
    RepoProbe,
    nearest_releases,
)
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import HttpFailure, LoaderError
from driver_loader.core.naming import repo_url
from driver_loader.core.oci import is_oci_reference, parse_artifact_reference, parse_oci_repository
from driver_loader.core.redaction import redact_url
from driver_loader.core.settings import Settings

PROBE_TIMEOUT = 5.0
MAX_FALLBACK_VERSIONS = 3
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")


def observe(settings: Settings, *, kernel=None, modern_support=None) -> Observations:
    """Everything evaluate() needs. `kernel` (a KernelModules) and `modern_support` (returning ModernEbpfSupport)
    default to the running kernel's, as install's do."""
    from driver_loader.core.distros import discover
    from driver_loader.host.modern_ebpf import check_support
    from driver_loader.host.root import read_host_facts
    from driver_loader.kernel.modules import KernelModules
    from driver_loader.pipeline.install import Edges, resolve_for_install
    from driver_loader.pipeline.verify import read_judged_kernel

    facts = read_host_facts(settings)
    target = discover(facts)
    kernel = kernel or KernelModules()
    running = read_judged_kernel(facts.kernel_release, facts.arch, settings, proc_root=kernel.proc_root,
                                 sys_root=kernel.sys_root)
    modern = (modern_support or check_support)()
    edges = Edges(kernel=kernel, modern_support=lambda: modern)
    plan, plan_error = None, None
    try:
        plan, _ = resolve_for_install(settings, edges)
    except LoaderError as error:
        plan_error = error
    obs = Observations(
        settings=settings,
        kernel_release=facts.kernel_release,
        kernel_version=facts.kernel_version,
        arch=facts.arch,
        os_name=facts.os_release.get("PRETTY_NAME") or facts.os_release.get("ID") or "unknown distro",
        target_id=target.naming.target_id,
        target_notes=tuple(target.notes),
        has_os_release=facts.has_os_release,
        in_container=any(os.path.exists(marker) for marker in CONTAINER_MARKERS),
        mounts=_host_mounts(settings.host_root, facts.kernel_release),
        modules_supported=kernel.modules_supported(),
        enforces_signatures=running.enforces_signatures,
        lockdown=running.lockdown,
        sig_enforce=running.sig_enforce,
        modern_supported=modern.supported,
        modern_reason=modern.reason,
        is_root=kernel.is_root(),
        plan=plan,
        plan_error=plan_error,
    )
    if settings.verify.key:
        from driver_loader.artifacts.signature import required_signer

        try:
            obs = dataclasses.replace(obs, signer=required_signer(settings))
        except LoaderError as error:
            obs = dataclasses.replace(obs, signer_error=error)
    if plan is None or not plan.driver_type.has_artifact:
        return obs
    if obs.signer_error is not None:
        return obs  # install would stop on the unreadable key before looking anywhere
    if plan.driver_type is DriverType.EBPF:
        from driver_loader.host.version_source import falco_libs_version

        obs = dataclasses.replace(obs, falco_libs=falco_libs_version())
    from driver_loader.artifacts.cache import ArtifactCache
    from driver_loader.pipeline.install import acquisition_plan

    loaded = kernel.loaded(settings.kernel_module_name) if plan.driver_type is DriverType.KMOD else None
    # The policy's steps from what install would see; discard=False: doctor changes nothing, not even the cache.
    acquisition = acquisition_plan(plan, settings, ArtifactCache(settings.cache_dir), loaded, discard=False)
    obs = dataclasses.replace(
        obs,
        loaded=None if loaded is None else ModuleState(loaded.name, loaded.version, loaded.initstate,
                                                       loaded.fits(plan.compatible)),
        acquisition=acquisition,
    )
    if settings.compile:
        obs = dataclasses.replace(obs, **_build_inputs(plan, settings))

    if settings.download and plan.candidates:
        obs = dataclasses.replace(obs, **_network(plan, settings))
    return obs


def _host_mounts(host_root: str, release: str) -> Dict[str, bool]:
    if host_root == "/":
        return {}
    from driver_loader.host.root import resolve_in_root

    found = {}
    for label, relpath, _, _ in HOST_MOUNTS:
        path = resolve_in_root(host_root, relpath.format(release=release))
        found[label] = path is not None and os.path.exists(path)
    return found


def _build_inputs(plan, settings: Settings) -> dict:
    from driver_loader.build.local_build import find_headers, find_sources
    from driver_loader.system.runner import CommandRunner

    def look(find, *args) -> Found:
        try:
            return Found(find(settings, *args).path)
        except LoaderError as error:
            return Found(None, error)

    runner = CommandRunner()
    return {
        "headers": look(find_headers, plan.kernel_release, plan.target_id),
        "sources": look(find_sources, plan.driver_version),
        "tools": {tool: runner.which(tool) for tool in TOOLS[plan.driver_type]},
    }


def _network(plan, settings: Settings) -> dict:
    """Each repository's reachability, then the candidate URLs of the default version, then (when none exists and
    the fallback is on) of the best compatible versions the repositories list, then the nearest kernels listed."""
    from driver_loader.net.http import build_session

    options = dataclasses.replace(settings.http, timeout=min(settings.http.timeout, PROBE_TIMEOUT), retries=0)
    try:
        session = build_session(options, repos=settings.repos)
    except LoaderError as error:
        return {"session_error": error}
    with session:
        repos = tuple(_probe_repo(session, repo, settings) for repo in settings.repos)
        artifacts = _probe_candidates(session, plan.candidates, plan.driver_version, settings)
        nearest: Tuple[str, ...] = ()
        if not any(a.outcome == "found" and not a.unverifiable for a in artifacts):
            from driver_loader.net.index import VersionIndex

            index = VersionIndex(session.get_document)
            if settings.version_fallback:
                artifacts += _probe_fallback(session, index, plan, settings)
            if not any(a.outcome == "found" and not a.unverifiable for a in artifacts):
                nearest = _nearest_kernels(index, plan, settings)
    return {"repos": repos, "artifacts": artifacts, "nearest": nearest}


def _probe_repo(session, repo: str, settings: Settings) -> RepoProbe:
    if is_oci_reference(repo):
        return _probe_registry(session, repo, settings)
    parts = urlsplit(repo)
    if parts.scheme == "file":
        path = unquote(parts.path)
        exists = os.path.isdir(path)
        return RepoProbe(repo, exists, f"directory {path} " + ("exists" if exists else "does not exist"))
    try:
        session.get_stream(repo_url(repo, "")).close()
        return RepoProbe(repo, True, "answered HTTP 200")
    except HttpFailure as failure:
        if failure.status is not None:
            return RepoProbe(repo, True, f"answered HTTP {failure.status}")
        return RepoProbe(repo, False, f"{redact_url(repo)}: {failure.message}")


def _probe_registry(session, repo: str, settings: Settings) -> RepoProbe:
    """A registry answers its API root (/v2/); any HTTP status counts, 401 being the usual one."""
    from driver_loader.net.oci_pull import OciPuller

    client = OciPuller(session, settings, None).client(parse_oci_repository(repo))
    try:
        session.get_stream(f"{client.scheme}://{client.registry}/v2/").close()
        return RepoProbe(repo, True, "the registry answered HTTP 200")
    except HttpFailure as failure:
        if failure.status is not None:
            return RepoProbe(repo, True, f"the registry answered HTTP {failure.status}")
        return RepoProbe(repo, False, f"{repo}: {failure.message}")


def _probe_tag(session, reference: str, version: str, settings: Settings) -> ArtifactProbe:
    """Whether the registry has a manifest at the artifact's tag (HEAD; nothing is downloaded)."""
    from driver_loader.core.oci import signature_tag
    from driver_loader.net.oci_pull import OciPuller

    repo, tag = parse_artifact_reference(reference)
    client = OciPuller(session, settings, None).client(repo)
    try:
        found = client.manifest_digest(repo.digest or tag or "")
        signed = found is not None and bool(settings.verify.key) and \
            client.manifest_digest(signature_tag(found)) is not None
    except LoaderError as failure:
        return ArtifactProbe(reference, "error", failure.message, version)
    if found is None:
        return ArtifactProbe(reference, "absent", "no manifest at that tag", version)
    unsigned = bool(settings.verify.key) and not signed
    return ArtifactProbe(reference, "found", f"manifest {found}", version, unverifiable=unsigned, unsigned=unsigned)


def _probe_url(session, url: str, version: str) -> ArtifactProbe:
    try:
        session.get_stream(url).close()
        return ArtifactProbe(redact_url(url), "found", "HTTP 200", version)
    except HttpFailure as failure:
        outcome = "absent" if failure.not_found else "error"
        return ArtifactProbe(failure.url, outcome, failure.message, version)


def _probe_candidates(session, candidates, version: str, settings: Settings) -> Tuple[ArtifactProbe, ...]:
    probes: List[ArtifactProbe] = []
    for candidate in candidates:
        for url in candidate.urls:
            if is_oci_reference(url):  # content-addressed: the manifest's digest is the checksum
                probes.append(_probe_tag(session, url, version, settings))
                if probes[-1].outcome == "found" and not probes[-1].unverifiable:
                    return tuple(probes)
                continue
            probe = _probe_url(session, url, version)
            if probe.outcome == "found" and _strict_would_refuse(session, url, settings):
                probe = dataclasses.replace(probe, unverifiable=True)
            elif probe.outcome == "found" and settings.verify.key and not _signature_published(session, url):
                probe = dataclasses.replace(probe, unverifiable=True, unsigned=True)
            probes.append(probe)
            if probe.outcome == "found" and not probe.unverifiable:
                return tuple(probes)
    return tuple(probes)


def _signature_published(session, url: str) -> bool:
    """With --verify-key, install needs `<url>.sig`; whether it verifies needs the artifact's bytes, which doctor
    does not download."""
    from driver_loader.net.fetch import signature_url

    try:
        session.get_stream(signature_url(url)).close()
        return True
    except HttpFailure:
        return False


def _strict_would_refuse(session, url: str, settings: Settings) -> bool:
    """Asks the policy, with the checksum documents install would read, whether the download would be refused."""
    from driver_loader.core.policy import VerifyPolicy, checksum_required_before_download
    from driver_loader.net.checksums import ChecksumResolver

    policy = VerifyPolicy(settings.verify.policy)
    if policy is not VerifyPolicy.STRICT:
        return False
    try:
        expectation = ChecksumResolver(settings.verify, session.get_document).expectation_for(url)
    except LoaderError:
        return False  # a broken checksum document is install's failure to report, not a missing one
    return checksum_required_before_download(policy, None, published=expectation is not None) is not None


def _probe_fallback(session, index, plan, settings: Settings) -> Tuple[ArtifactProbe, ...]:
    listed: Set[str] = set()
    for repo in settings.repos:
        listed.update(index.versions(repo) or ())
    others = [v for v in plan.compatible.highest_first(listed) if v != plan.driver_version]
    probes: Tuple[ArtifactProbe, ...] = ()
    for version in others[:MAX_FALLBACK_VERSIONS]:
        probes += _probe_candidates(session, plan.candidates_for_version(version), version, settings)
        if probes and probes[-1].outcome == "found" and not probes[-1].unverifiable:
            break
    return probes


def _nearest_kernels(index, plan, settings: Settings) -> Tuple[str, ...]:
    names: Set[str] = set()
    for repo in settings.repos:
        names.update(name for arch, name in index.artifacts(repo, plan.driver_version) or () if arch == plan.arch)
    prefix = f"{settings.driver_name}_{plan.target_id}_"
    return nearest_releases(plan.fixed_kernel_release, names, prefix, plan.driver_type.extension)


