"""The install pipeline: resolve the plan, take the already-loaded fast path when it applies, get a verified
artifact (cache, download, build), run the pre-load checks on the very bytes that will be loaded, load the module
or hand the probe over, confirm, and only then tell Falco.

This module only orchestrates: every edge (kernel, network, cache, builds, the running kernel's facts) comes in
through `Edges`, so tests drive the whole pipeline with fakes. The download, build and ELF layers are imported
only when needed: the fast path, taken on every restart, reads a few sysfs files and nothing more.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from driver_loader.artifacts import signature
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import LoaderError, NetworkError, NoDriverError, UnsupportedHostError, VerificationError
from driver_loader.core.plan import Plan
from driver_loader.core.policy import (
    AcquisitionPlan,
    CachedArtifact,
    Observations,
    Source,
    Step,
    StepKind,
    VerifyPolicy,
    acquisition_steps,
    nothing_usable_exit_code,
)
from driver_loader.core.policy import LoadedModule as ObservedModule
from driver_loader.core.settings import Settings
from driver_loader.falco.config import engine_config_path, write_engine_config
from driver_loader.falco.probe_link import point_probe_link, probe_link_path
from driver_loader.kernel.modules import KernelModules, LoadedModule, load_module, persist_module, unload_module
from driver_loader.output.log import get_logger
from driver_loader.output.progress import BuildSpinner, DownloadBar
from driver_loader.pipeline.resolve import resolve_plan
from driver_loader.pipeline.verify import (
    Artifact,
    Verified,
    cache_location,
    open_verified,
    pins,
    read_judged_kernel,
)

if TYPE_CHECKING:
    from driver_loader.core.kernel import RunningKernel
    from driver_loader.host.modern_ebpf import ModernEbpfSupport
    from driver_loader.pipeline.seams import Build, Cache, Fetch, Runner

log = get_logger(__name__)

SOURCE_LOADED = Source.LOADED
SOURCE_CACHE = Source.CACHE
SOURCE_DOWNLOAD = Source.DOWNLOAD
SOURCE_BUILD = Source.BUILD
SOURCE_BUILTIN = Source.BUILTIN  # modern_ebpf ships inside Falco


@dataclasses.dataclass
class Edges:
    """Everything the pipeline reads from or changes in the world. None means the real implementation."""

    kernel: KernelModules = dataclasses.field(default_factory=KernelModules)
    resolve: Callable[..., Plan] = resolve_plan
    modern_support: Callable[[], ModernEbpfSupport] = lambda: _modern_ebpf_support()
    running_kernel: Optional[Callable[[Plan], RunningKernel]] = None
    fetch: Optional[Fetch] = None
    build: Optional[Build] = None
    cache: Optional[Cache] = None
    runner: Optional[Runner] = None  # runs depmod for --persist


@dataclasses.dataclass(frozen=True)
class InstallResult:
    driver_type: DriverType
    source: str
    artifact: Optional[str] = None
    version: Optional[str] = None
    probe: Optional[str] = None
    falco_config: Optional[str] = None
    actions: Tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "type": str(self.driver_type),
            "artifact": self.artifact,
            "version": self.version,
            "source": self.source,
            "actions": list(self.actions),
            "probe": self.probe,
            "falco_config": self.falco_config,
        }


@dataclasses.dataclass(frozen=True)
class DryRun:
    plan: Plan
    steps: Tuple[str, ...]


# ---------------------------------------------------------------------------------------------------------------------
# Entry points


def resolve_for_install(settings: Settings, edges: Edges) -> Tuple[Plan, Optional[ModernEbpfSupport]]:
    """The plan, with the type chosen against what this kernel really supports."""
    modern = edges.modern_support() if DriverType.MODERN_EBPF in settings.driver_types else None
    if modern is not None and not modern.supported:
        log.info("modern_ebpf is not supported by the running kernel", reason=modern.reason)
    modules_supported = edges.kernel.modules_supported()
    try:
        plan = edges.resolve(settings, modules_supported=modules_supported,
                             modern_ebpf_supported=bool(modern and modern.supported))
    except UnsupportedHostError as error:
        if modules_supported:
            raise
        modern = modern or edges.modern_support()
        raise UnsupportedHostError(
            error.message,
            tried=error.tried,
            hint="this kernel cannot load modules (no /proc/modules); use --type modern_ebpf"
            + (", which this kernel supports" if modern.supported else f" (not usable here: {modern.reason})"),
        ) from None
    log.debug("selected driver type", type=str(plan.driver_type), driver_version=plan.driver_version,
              compatible=str(plan.compatible))
    return plan, modern


def install(settings: Settings, edges: Optional[Edges] = None) -> InstallResult:
    edges = edges or Edges()
    plan, modern = resolve_for_install(settings, edges)
    if plan.driver_type is DriverType.MODERN_EBPF:
        return _install_modern_ebpf(settings, modern)
    if plan.driver_type is DriverType.KMOD:
        return _install_kmod(plan, settings, edges)
    return _install_ebpf_probe(plan, settings, edges)


def dry_run(settings: Settings, edges: Optional[Edges] = None) -> DryRun:
    """What install would do, from what can be seen without changing anything or using the network: the policy's
    steps, from the same observations install makes."""
    edges = edges or Edges()
    plan, modern = resolve_for_install(settings, edges)
    config = engine_config_path(settings.falco_config_dir)
    tell_falco = (f"write {config} (engine.kind: {plan.driver_type})" if settings.update_falco
                  else "leave Falco's config alone (--no-update-falco)")
    cache = edges.cache
    if cache is None and plan.driver_type.has_artifact:
        from driver_loader.artifacts.cache import ArtifactCache

        cache = ArtifactCache(settings.cache_dir)
    loaded = edges.kernel.loaded(settings.kernel_module_name) if plan.driver_type is DriverType.KMOD else None
    acquisition = acquisition_plan(plan, settings, cache, loaded, discard=False) \
        if plan.driver_type.has_artifact else acquisition_steps(
            plan.driver_type, Observations(), policy=VerifyPolicy(settings.verify.policy),
            download=settings.download, compile=settings.compile, version_fallback=settings.version_fallback)
    steps = [f"skip the cached artifact {j.entry.path}: {j.decision.reason}"
             for j in acquisition.cache if not j.decision.usable]
    steps += [_describe_step(step, plan, settings, modern) for step in acquisition.steps]
    if not acquisition.done_without_artifact and StepKind.FAIL not in acquisition.kinds():
        checks = f"run the pre-load checks{_falco_minimums(plan)}"
        if plan.driver_type is DriverType.KMOD:
            steps.append(f"{checks}, then load it with finit_module and confirm "
                         f"/sys/module/{settings.kernel_module_name}/version")
            if settings.persist:
                steps.append(f"install it as /lib/modules/{plan.kernel_release}/extra/"
                             f"{settings.kernel_module_name}.ko and run depmod")
        else:
            link = probe_link_path(settings.cache_dir, settings.driver_name)
            steps.append(f"{checks}, then point {link} to it")
    if StepKind.FAIL in acquisition.kinds():
        return DryRun(plan, tuple(steps))
    return DryRun(plan, (*steps, tell_falco))


def _falco_minimums(plan: Plan) -> str:
    """The API/schema rules the pre-load checks hold the artifact to, when Falco told us its minimums."""
    rules = []
    for label, version, exact_minor in (
        ("api version", plan.requirement.api_version, False),
        # The legacy probe's schema rule is stricter (core/checks.py).
        ("schema version", plan.requirement.schema_version, plan.driver_type is DriverType.EBPF),
    ):
        if version:
            rule = "same major and minor, patch >=" if exact_minor else "same major, minor.patch >="
            rules.append(f"the {label} must satisfy Falco's {version} ({rule})")
    return f" ({'; '.join(rules)})" if rules else ""


def _describe_step(step: Step, plan: Plan, settings: Settings, modern: Optional[ModernEbpfSupport]) -> str:
    kind = step.kind
    if kind is StepKind.USE_BUILTIN:
        return f"use the modern_ebpf driver built into Falco ({modern.reason if modern else 'supported'})"
    if kind is StepKind.KEEP_LOADED:
        return f"nothing to do: module {step.detail} is already loaded and within {plan.compatible}"
    if kind is StepKind.REPLACE_LOADED:
        return (f"unload the loaded module {step.detail} (it is outside {plan.compatible}), retrying "
                f"{settings.unload_retries} time(s) while it is in use")
    if kind is StepKind.USE_CACHE:
        return f"use the cached artifact {step.path} ({step.detail}) once it passes the pre-load checks"
    if kind is StepKind.DOWNLOAD:
        urls = [url for candidate in plan.candidates for url in candidate.urls]
        return ("download the first of: " + ", ".join(urls) if urls else
                "download: no artifact name can be made for this host")
    if kind is StepKind.OTHER_VERSIONS:
        return f"if none exists, try the newest other version in {plan.compatible} a repository lists"
    if kind is StepKind.BUILD:
        return (f"otherwise build {settings.driver_name} {plan.driver_version} for {plan.kernel_release} "
                f"from /usr/src/{settings.driver_name}-{plan.driver_version}")
    return f"fail: {step.detail}"


# ---------------------------------------------------------------------------------------------------------------------
# The three driver types


def _install_modern_ebpf(settings: Settings, modern: Optional[ModernEbpfSupport]) -> InstallResult:
    log.info("no artifact needed: the modern_ebpf driver is built into Falco",
             support=modern.reason if modern else "assumed")
    actions: List[str] = []
    config = _tell_falco(settings, DriverType.MODERN_EBPF, None, actions)
    return InstallResult(DriverType.MODERN_EBPF, SOURCE_BUILTIN, falco_config=config, actions=tuple(actions))


def _install_kmod(plan: Plan, settings: Settings, edges: Edges) -> InstallResult:
    kernel = edges.kernel
    name = settings.kernel_module_name
    loaded = kernel.loaded(name)
    actions: List[str] = []
    first = acquisition_plan(plan, settings, None, loaded, observe=False).steps[0]
    if first.kind is StepKind.KEEP_LOADED and loaded is not None:
        log.debug(f"module {name} {loaded.version} already loaded; nothing to do", compatible=str(plan.compatible))
        config = _tell_falco(settings, DriverType.KMOD, None, actions)
        return InstallResult(DriverType.KMOD, SOURCE_LOADED, version=loaded.version, falco_config=config,
                             actions=tuple(actions))
    if loaded is not None:
        log.info("the loaded module is not compatible; it will be replaced", module=name,
                 version=loaded.version or "(none)", compatible=str(plan.compatible))
    if not kernel.is_root():
        raise LoaderError(
            "loading a kernel module needs root",
            tried=["checked the effective user id: it is not 0"],
            hint="run as root (in a container: privileged, or with CAP_SYS_MODULE), or use --type modern_ebpf",
        )
    # Unloading first, as the legacy loader and falcoctl do: a module that stays busy stops the install before
    # anything is downloaded or built, and the incompatible module is of no use to Falco anyway.
    unloaded = unload_module(kernel, name, retries=settings.unload_retries)
    if unloaded is not None:
        actions.append(f"unloaded {name} {unloaded.version or '(no version)'}")
    artifact, verified = _verified_artifact(plan, settings, edges)
    try:
        if artifact.source in (SOURCE_DOWNLOAD, SOURCE_BUILD):
            actions.append(f"{'downloaded' if artifact.source == SOURCE_DOWNLOAD else 'built'} {artifact.path}")
        version = verified.info.driver_version
        if not version:  # the pre-load checks refuse such a module already; never load one of unknown version
            raise VerificationError(f"{artifact.path} carries no driver version; nothing was loaded",
                                    hint="this does not look like a Falco driver build")
        method = load_module(kernel, verified.fd, name=name, version=version, compressed=verified.compressed,
                             likely_causes=verified.warnings)
    finally:
        os.close(verified.fd)
    actions.append(f"loaded {name} {version} from {artifact.path} ({method})")
    log.info("module loaded", module=name, version=version, path=artifact.path, sha256=artifact.sha256,
             verified_by=str(verified.decision.evidence))
    config = _tell_falco(settings, DriverType.KMOD, None, actions)
    if settings.persist:
        persisted = persist_module(verified.elf, name=name, release=plan.kernel_release,
                                   host_root=settings.host_root, runner=edges.runner,
                                   timeout=settings.tool_timeout)
        actions.append(f"installed {persisted} and ran depmod")
    return InstallResult(DriverType.KMOD, artifact.source, artifact=artifact.path, version=version,
                         falco_config=config, actions=tuple(actions))


def _install_ebpf_probe(plan: Plan, settings: Settings, edges: Edges) -> InstallResult:
    artifact, verified = _verified_artifact(plan, settings, edges)
    os.close(verified.fd)  # Falco opens the probe itself, by the link's path
    actions: List[str] = []
    if artifact.source in (SOURCE_DOWNLOAD, SOURCE_BUILD):
        actions.append(f"{'downloaded' if artifact.source == SOURCE_DOWNLOAD else 'built'} {artifact.path}")
    link = probe_link_path(settings.cache_dir, settings.driver_name)
    if point_probe_link(link, artifact.path):
        actions.append(f"linked {link} -> {artifact.path}")
    config = _tell_falco(settings, DriverType.EBPF, link, actions)
    return InstallResult(DriverType.EBPF, artifact.source, artifact=artifact.path,
                         version=verified.info.driver_version, probe=link, falco_config=config,
                         actions=tuple(actions))


def _is_compatible(loaded: Optional[LoadedModule], plan: Plan) -> bool:
    return loaded is not None and loaded.fits(plan.compatible)


def _tell_falco(settings: Settings, driver_type: DriverType, probe: Optional[str], actions: List[str]) -> Optional[str]:
    """Point Falco at the driver; called only once the driver is in place."""
    if not settings.update_falco:
        log.info("leaving Falco's config alone (update_falco is off)")
        return None
    path, changed = write_engine_config(settings.falco_config_dir, driver_type, probe)
    if changed:
        actions.append(f"wrote {path} (engine.kind: {driver_type})")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Getting a verified artifact


def observe_cache(plan: Plan, settings: Settings, cache: Any, *, discard: bool = True) -> Tuple[CachedArtifact, ...]:
    """The plan's candidates found in the cache, re-hashed, each with its verification record and pin. With
    discard=False (--dry-run, doctor) a tampered entry is only skipped, not removed."""
    resolver = pins(settings)
    found = []
    for candidate in plan.candidates:
        entry = cache.lookup(candidate.cache_path, discard=discard)
        if entry is None:
            continue
        location = f"{plan.driver_version}/{plan.arch}/{candidate.filename}"
        found.append(CachedArtifact(entry.path, entry.record, resolver.pin(location)))
    return tuple(found)


def acquisition_plan(plan: Plan, settings: Settings, cache: Any, loaded: Optional[LoadedModule] = None, *,
                     discard: bool = True, observe: bool = True) -> AcquisitionPlan:
    """What the policy says to do for this plan, from what is loaded and cached now. observe=False leaves the
    cache unread: the already-loaded fast path decides from the loaded module alone."""
    observed_loaded = None
    if loaded is not None:
        observed_loaded = ObservedModule(loaded.name, loaded.version, _is_compatible(loaded, plan))
    cached = observe_cache(plan, settings, cache, discard=discard) if observe and cache is not None else ()
    return acquisition_steps(
        plan.driver_type,
        Observations(loaded=observed_loaded, cached=cached),
        policy=VerifyPolicy(settings.verify.policy),
        download=settings.download, compile=settings.compile, version_fallback=settings.version_fallback,
        signer=signature.required_signer(settings),
    )


def _verified_artifact(plan: Plan, settings: Settings, edges: Edges) -> Tuple[Artifact, Verified]:
    """The first artifact, in the policy's step order, whose bytes the policy accepts, opened and verified."""
    cache = edges.cache
    if cache is None:
        from driver_loader.artifacts.cache import ArtifactCache

        cache = ArtifactCache(settings.cache_dir)
    running = (edges.running_kernel or _read_running_kernel(settings, edges.kernel))(plan)
    acquisition = acquisition_plan(plan, settings, cache)
    observed = {judged.entry.path: judged.entry for judged in acquisition.cache}
    for refused in acquisition.cache:
        if not refused.decision.usable:
            log.info("not using the cached artifact", path=refused.entry.path, reason=refused.decision.reason)
    resolver = pins(settings)
    failures: List[Tuple[str, LoaderError]] = []
    for step in acquisition.steps:
        obtain = _step_action(step, plan, settings, edges, cache, observed)
        if obtain is None:
            continue
        label, action = obtain
        try:
            artifact = action()
        except LoaderError as exc:
            log.warning(f"{label} failed", reason=exc.message)
            failures.append((label, exc))
            continue
        if artifact is None:
            continue
        pin = resolver.pin(cache_location(artifact.path))
        try:
            return artifact, open_verified(artifact, plan, settings, running, pin)
        except VerificationError as exc:
            log.warning("artifact refused", path=artifact.path, reason=exc.message)
            failures.append((f"{artifact.source} {artifact.path}", exc))
            # It cannot be used here, and a later source (or run) would be handed the same file back.
            cache.remove(artifact.path)
    raise _no_artifact(plan, settings, failures, acquisition)


def _step_action(step: Step, plan: Plan, settings: Settings, edges: Edges, cache: Any,
                 observed: Dict[str, CachedArtifact]) -> Optional[Tuple[str, Callable[[], Optional[Artifact]]]]:
    if step.kind is StepKind.USE_CACHE and step.path in observed:
        # Already re-hashed when observed; open_verified hashes the very bytes it loads once more.
        entry = observed[step.path]

        def use_cache() -> Optional[Artifact]:
            log.info("using the cached artifact", path=entry.path, sha256=entry.record.sha256,
                     verified_by=str(entry.record.evidence))
            return Artifact.cached(entry.path, entry.record)

        return "cache", use_cache
    if step.kind is StepKind.DOWNLOAD:
        def download() -> Artifact:
            fetch: Fetch
            if edges.fetch is not None:
                fetch = edges.fetch
            else:
                from driver_loader.net.fetch import fetch_artifact

                fetch = fetch_artifact
            bar = DownloadBar(f"downloading {plan.driver_type}")
            try:
                result = fetch(plan, settings, cache=cache, progress=bar)
            finally:
                bar.close()
            return Artifact.fetched(result)

        return "download", download
    if step.kind is StepKind.BUILD:
        def build() -> Artifact:
            build_artifact: Build
            if edges.build is not None:
                build_artifact = edges.build
            else:
                from driver_loader.build.local_build import build_artifact as local_build

                build_artifact = local_build
            spinner = BuildSpinner()
            try:
                result = build_artifact(plan, settings, cache=cache, progress=spinner)
            finally:
                spinner.close()
            return Artifact.built(result)

        return "build", build
    return None  # OTHER_VERSIONS happen inside the download step; FAIL is what remains when nothing worked


def _modern_ebpf_support() -> ModernEbpfSupport:
    from driver_loader.host.modern_ebpf import check_support  # ctypes: only when modern_ebpf is considered

    return check_support()


def _read_running_kernel(settings: Settings, kernel: KernelModules) -> Callable[[Plan], Any]:
    def read(plan: Plan):
        return read_judged_kernel(plan.kernel_release, plan.arch, settings, proc_root=kernel.proc_root,
                                  sys_root=kernel.sys_root)

    return read


def _no_artifact(plan: Plan, settings: Settings, failures: List[Tuple[str, LoaderError]],
                 acquisition: AcquisitionPlan) -> LoaderError:
    if not failures:
        skipped = [f"cache: {j.entry.path}: {j.decision.reason}" for j in acquisition.cache if not j.decision.usable]
        if skipped:
            hints = list(dict.fromkeys(j.decision.hint for j in acquisition.cache if j.decision.hint))
            return VerificationError(
                f"no usable {plan.driver_type} artifact: the cached one was refused "
                f"({acquisition.cache[0].decision.reason}), and download and compile are both disabled",
                tried=skipped,
                hint="; ".join(hints + ["or allow --download or --compile"]),
                exit_code=nothing_usable_exit_code(acquisition),  # the same code doctor predicts
            )
        return NoDriverError(
            f"no {plan.driver_type} artifact is cached, and download and compile are both disabled",
            tried=[f"cache: {c.cache_path}" for c in plan.candidates] or list(plan.refusals),
            hint="allow --download or --compile, or use --type modern_ebpf",
        )
    if len(failures) == 1:
        return failures[0][1]
    error_type = VerificationError if any(isinstance(e, VerificationError) for _, e in failures) else NoDriverError
    tried: List[str] = []
    for label, error in failures:
        tried.append(f"{label}: {error.message}")
        tried += [f"  {item}" for item in error.tried]
    network = [error for _, error in failures if isinstance(error, NetworkError)]
    if network:
        # The network is the cause to fix first: a local build is the fallback, not the remedy.
        return error_type(
            f"no usable {plan.driver_type} for kernel {plan.kernel_release}: the driver repositories "
            f"({', '.join(network[0].repos)}) could not be reached, and "
            + "; ".join(f"{label} failed" for label, error in failures if not isinstance(error, NetworkError)),
            tried=tried,
            hint=_first_then_build(network[0], failures),
        )
    # A refused artifact (a checksum mismatch, an ELF for another kernel) is the cause to report first; a build that
    # could not run either is the fallback, named second.
    refused = [error for _, error in failures if isinstance(error, VerificationError)]
    primary = refused[0] if refused else failures[-1][1]
    return error_type(
        f"no usable {plan.driver_type} for kernel {plan.kernel_release}: "
        + "; ".join(f"{label} failed" for label, _ in failures),
        tried=tried,
        hint=_first_then_build(primary, failures),
    )


def _first_then_build(primary: LoaderError, failures: List[Tuple[str, LoaderError]]) -> str:
    """The primary cause's advice, then how a local build could still work, when the build failed for another
    reason."""
    build = next((error for label, error in failures if label == "build"), None)
    if build is None or build is primary or not build.hint or build.hint == primary.hint:
        return primary.hint
    return f"{primary.hint}; to build locally instead: {build.hint}" if primary.hint else build.hint
