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
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple

from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import LoaderError, NetworkError, NoDriverError, UnsupportedHostError, VerificationError
from driver_loader.core.plan import Plan
from driver_loader.core.settings import Settings
from driver_loader.falco.config import engine_config_path, write_engine_config
from driver_loader.falco.probe_link import point_probe_link, probe_link_path
from driver_loader.kernel.modules import KernelModules, LoadedModule, load_module, persist_module, unload_module
from driver_loader.output.log import get_logger
from driver_loader.output.progress import BuildSpinner, DownloadBar
from driver_loader.pipeline.resolve import resolve_plan

if TYPE_CHECKING:
    from driver_loader.host.modern_ebpf import ModernEbpfSupport

log = get_logger(__name__)

SOURCE_LOADED = "loaded"
SOURCE_CACHE = "cache"
SOURCE_DOWNLOAD = "download"
SOURCE_BUILD = "build"
SOURCE_BUILTIN = "builtin"  # modern_ebpf ships inside Falco


@dataclasses.dataclass
class Edges:
    """Everything the pipeline reads from or changes in the world. None means the real implementation."""

    kernel: KernelModules = dataclasses.field(default_factory=KernelModules)
    resolve: Callable[..., Plan] = resolve_plan
    modern_support: Callable[[], ModernEbpfSupport] = lambda: _modern_ebpf_support()
    running_kernel: Optional[Callable[[Plan], Any]] = None
    fetch: Optional[Callable[..., Any]] = None
    build: Optional[Callable[..., Any]] = None
    cache: Optional[Any] = None
    runner: Optional[Any] = None  # runs depmod for --persist


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


@dataclasses.dataclass(frozen=True)
class _Artifact:
    path: str
    sha256: str
    source: str
    verified_by: str


@dataclasses.dataclass(frozen=True)
class _Verified:
    """An artifact opened once, whose bytes passed every check; `fd` is what gets loaded."""

    fd: int
    elf: bytes
    info: Any
    compressed: bool
    warnings: Tuple[str, ...]


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
    """What install would do, from what can be seen without changing anything or using the network."""
    edges = edges or Edges()
    plan, modern = resolve_for_install(settings, edges)
    steps: List[str] = []
    config = engine_config_path(settings.falco_config_dir)
    tell_falco = (f"write {config} (engine.kind: {plan.driver_type})" if settings.update_falco
                  else "leave Falco's config alone (--no-update-falco)")
    if plan.driver_type is DriverType.MODERN_EBPF:
        steps.append(f"use the modern_ebpf driver built into Falco ({modern.reason if modern else 'supported'})")
        return DryRun(plan, (*steps, tell_falco))
    if plan.driver_type is DriverType.KMOD:
        loaded = edges.kernel.loaded(settings.kernel_module_name)
        if _is_compatible(loaded, plan):
            steps.append(f"nothing to do: module {loaded.name} {loaded.version} is already loaded "
                         f"and within {plan.compatible}")
            return DryRun(plan, (*steps, tell_falco))
        if loaded is not None:
            steps.append(f"unload the loaded module {loaded.name} {loaded.version or '(no version)'} (it is outside "
                         f"{plan.compatible}), retrying {settings.unload_retries} time(s) while it is in use")
    steps += _artifact_steps(plan, settings)
    if plan.driver_type is DriverType.KMOD:
        steps.append(f"run the pre-load checks, then load it with finit_module and confirm "
                     f"/sys/module/{settings.kernel_module_name}/version")
        if settings.persist:
            steps.append(f"install it as /lib/modules/{plan.kernel_release}/extra/{settings.kernel_module_name}.ko "
                         "and run depmod")
    else:
        link = probe_link_path(settings.cache_dir, settings.driver_name)
        steps.append(f"run the pre-load checks, then point {link} to it")
    return DryRun(plan, (*steps, tell_falco))


def _artifact_steps(plan: Plan, settings: Settings) -> List[str]:
    steps = []
    cached = [c.cache_path for c in plan.candidates if os.path.isfile(c.cache_path)]
    if cached:
        steps.append(f"use the cached artifact {cached[0]} once it verifies")
    if settings.download:
        urls = [url for candidate in plan.candidates for url in candidate.urls]
        steps.append("download the first of: " + ", ".join(urls) if urls else
                     "download: no artifact name can be made for this host")
        if settings.version_fallback:
            steps.append(f"if none exists, try the newest other version in {plan.compatible} a repository lists")
    if settings.compile:
        steps.append(f"otherwise build {settings.driver_name} {plan.driver_version} for {plan.kernel_release} "
                     f"from /usr/src/{settings.driver_name}-{plan.driver_version}")
    if not cached and not settings.download and not settings.compile:
        steps.append("fail: nothing is cached and download and compile are both disabled")
    return steps


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
    if _is_compatible(loaded, plan):
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
        method = load_module(kernel, verified.fd, name=name, version=version, compressed=verified.compressed,
                             likely_causes=verified.warnings)
    finally:
        os.close(verified.fd)
    actions.append(f"loaded {name} {version} from {artifact.path} ({method})")
    log.info("module loaded", module=name, version=version, path=artifact.path, sha256=artifact.sha256,
             verified_by=artifact.verified_by)
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


def _verified_artifact(plan: Plan, settings: Settings, edges: Edges) -> Tuple[_Artifact, _Verified]:
    """The first artifact, in source order, whose bytes pass every pre-load check, opened and verified."""
    cache = edges.cache
    if cache is None:
        from driver_loader.artifacts.cache import ArtifactCache

        cache = ArtifactCache(settings.cache_dir)
    running = (edges.running_kernel or _read_running_kernel(settings, edges.kernel))(plan)
    sources = _sources(plan, settings, edges, cache)
    failures: List[Tuple[str, LoaderError]] = []
    for label, obtain in sources:
        try:
            artifact = obtain()
        except LoaderError as exc:
            log.warning(f"{label} failed", reason=exc.message)
            failures.append((label, exc))
            continue
        if artifact is None:
            continue
        try:
            return artifact, _open_verified(artifact, plan, settings, running)
        except VerificationError as exc:
            log.warning("artifact failed the pre-load checks", path=artifact.path, reason=exc.message)
            failures.append((f"{artifact.source} {artifact.path}", exc))
            # It cannot work on this kernel, and a later source (or run) would be handed the same file back.
            cache.remove(artifact.path)
    raise _no_artifact(plan, settings, failures)


_Source = Tuple[str, Callable[[], Optional[_Artifact]]]


def _sources(plan: Plan, settings: Settings, edges: Edges, cache) -> List[_Source]:
    sources: List[_Source] = []
    if not settings.download:
        # With downloads on, the fetch layer owns cache reuse (it knows the checksum policy).
        sources.append(("cache lookup", lambda: _cached(plan, settings, cache)))
    if settings.download:
        def download() -> _Artifact:
            fetch = edges.fetch
            if fetch is None:
                from driver_loader.net.fetch import fetch_artifact as fetch
            bar = DownloadBar(f"downloading {plan.driver_type}")
            try:
                result = fetch(plan, settings, cache=cache, progress=bar)
            finally:
                bar.close()
            source = SOURCE_CACHE if result.source == SOURCE_CACHE else SOURCE_DOWNLOAD
            return _Artifact(result.path, result.sha256, source, result.verified_by)

        sources.append(("download", download))
    if settings.compile:
        def build() -> _Artifact:
            build_artifact = edges.build
            if build_artifact is None:
                from driver_loader.build.local_build import build_artifact
            spinner = BuildSpinner()
            try:
                result = build_artifact(plan, settings, cache=cache, progress=spinner)
            finally:
                spinner.close()
            return _Artifact(result.path, result.sha256, SOURCE_BUILD, result.verified_by)

        sources.append(("build", build))
    return sources


def _cached(plan: Plan, settings: Settings, cache) -> Optional[_Artifact]:
    pinned = settings.verify.sha256
    for candidate in plan.candidates:
        entry = cache.lookup(candidate.cache_path)
        if entry is None:
            continue
        if pinned and entry.sha256 != pinned:
            log.info("cached artifact does not match the pinned digest; not using it", path=entry.path)
            continue
        log.info("using the cached artifact", path=entry.path, sha256=entry.sha256, verified_by=entry.verified_by)
        return _Artifact(entry.path, entry.sha256, SOURCE_CACHE, entry.verified_by)
    return None


def _open_verified(artifact: _Artifact, plan: Plan, settings: Settings, running) -> _Verified:
    """Open the artifact once and check the bytes read from that descriptor: its digest is the one the cache,
    download or build recorded, and it passes every pre-load check. The same descriptor is what gets loaded, so
    nothing can swap the file in between."""
    from driver_loader.artifacts.elf import MAX_ARTIFACT_SIZE, compression_of, decompress, inspect_artifact
    from driver_loader.core.checks import Finding, check_artifact

    try:
        fd = os.open(artifact.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise VerificationError(f"cannot open {artifact.path}: {exc.strerror or exc}",
                                hint="the cached artifact vanished or was replaced by a link; run again") from None
    try:
        raw = _read_fd(fd, MAX_ARTIFACT_SIZE + 1)
        if len(raw) > MAX_ARTIFACT_SIZE:
            raise VerificationError(f"{artifact.path} is larger than {MAX_ARTIFACT_SIZE} bytes",
                                    hint="a Falco driver is a few MiB; this is not a driver artifact")
        import hashlib

        digest = hashlib.sha256(raw).hexdigest()
        if digest != artifact.sha256:
            raise VerificationError(
                f"{artifact.path} changed after it was verified (sha256 {digest}, expected {artifact.sha256})",
                tried=[f"{artifact.source}: verified by {artifact.verified_by}"],
                hint="something modified the cache; remove the file and run again",
            )
        elf = decompress(raw, filename=artifact.path)
        info = inspect_artifact(elf, filename=artifact.path)
        findings = list(check_artifact(
            info, running, driver_type=plan.driver_type, compatible=plan.compatible,
            required_api=plan.requirement.api_version, required_schema=plan.requirement.schema_version,
        ))
        if plan.driver_type is DriverType.KMOD and info.name != settings.kernel_module_name:
            findings.append(Finding(
                False, "module_name",
                f"module calls itself {info.name!r}, expected {settings.kernel_module_name!r}",
                hint="use the artifact built for this driver name (--name)",
            ))
        _raise_on_failures(artifact.path, findings)
        for finding in findings:
            if finding.warning:
                log.warning(finding.message, hint=finding.hint)
        log.info("artifact passed the pre-load checks", path=artifact.path, version=info.driver_version)
        return _Verified(fd, elf, info, compression_of(raw) is not None,
                         tuple(f.message for f in findings if f.warning))
    except BaseException:
        os.close(fd)
        raise


def _raise_on_failures(path: str, findings: Sequence) -> None:
    failed = [f for f in findings if not f.ok]
    if not failed:
        return
    more = f" (and {len(failed) - 1} more problem{'s' if len(failed) > 2 else ''})" if len(failed) > 1 else ""
    hints = list(dict.fromkeys(f.hint for f in failed if f.hint))
    raise VerificationError(
        f"{path} would not load: {failed[0].message}{more}; nothing was loaded",
        tried=[f"{f.code}: {f.message}" for f in failed],
        hint="; ".join(hints),
    )


def _modern_ebpf_support() -> ModernEbpfSupport:
    from driver_loader.host.modern_ebpf import check_support  # ctypes: only when modern_ebpf is considered

    return check_support()


def _read_fd(fd: int, limit: int) -> bytes:
    chunks = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_running_kernel(settings: Settings, kernel: KernelModules) -> Callable[[Plan], Any]:
    def read(plan: Plan):
        from driver_loader.host.kernel_facts import kernel_roots, read_running_kernel

        return read_running_kernel(plan.kernel_release, plan.arch, proc_root=kernel.proc_root,
                                   sys_root=kernel.sys_root, roots=kernel_roots(settings.host_root))

    return read


def _no_artifact(plan: Plan, settings: Settings, failures: List[Tuple[str, LoaderError]]) -> LoaderError:
    if not failures:
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
        others = [error.hint for _, error in failures if not isinstance(error, NetworkError) and error.hint]
        return error_type(
            f"no usable {plan.driver_type} for kernel {plan.kernel_release}: the driver repositories "
            f"({', '.join(network[0].repos)}) could not be reached, and "
            + "; ".join(f"{label} failed" for label, error in failures if not isinstance(error, NetworkError)),
            tried=tried,
            hint=network[0].hint + (f"; to build locally instead: {others[-1]}" if others else ""),
        )
    return error_type(
        f"no usable {plan.driver_type} for kernel {plan.kernel_release}: "
        + "; ".join(f"{label} failed" for label, _ in failures),
        tried=tried,
        hint=failures[-1][1].hint,
    )
