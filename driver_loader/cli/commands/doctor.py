"""`doctor`: what `install` would meet on this node, check by check, each pass, warn, fail or skip with advice.

`observe` reads the world (the host, the running kernel, the repositories) through the same modules install uses;
`evaluate` is pure and turns those observations into checks and a verdict. The exit status is the one install
with the same options would end with: 0 when it would succeed, else 6 (unsupported host), 3 (no driver), 2 (no
driver version) or 1 (anything else, e.g. the repositories could not be reached or not root).
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import sys
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

import click

from driver_loader.cli.commands._options import (
    build_options,
    fetch_options,
    install_options,
    resolution_options,
    settings_from_flags,
)
from driver_loader.core.distros import UNDETERMINED
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import ExitCode, HttpFailure, LoaderError
from driver_loader.core.redaction import redact_url
from driver_loader.core.settings import Settings
from driver_loader.kernel.modules import LoadedModule
from driver_loader.output.log import get_logger

log = get_logger(__name__)

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
PROBE_TIMEOUT = 5.0
MAX_FALLBACK_VERSIONS = 3
MAX_NEAREST = 3
# What the loader reads under a host root, and how the Helm chart mounts it.
HOST_MOUNTS = (
    ("etc", "etc/os-release", "-v /etc:/host/etc:ro", "the distro is detected from the wrong os-release"),
    ("lib/modules", "lib/modules/{release}", "-v /lib/modules:/host/lib/modules",
     "kernel headers, in-tree modules and the vermagic cannot be found"),
    ("usr", "usr/src", "-v /usr:/host/usr:ro", "the host's kernel headers and driver sources cannot be found"),
    ("boot", "boot", "-v /boot:/host/boot:ro", "the kernel config cannot be read"),
)
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")
TOOLS = {DriverType.KMOD: ("dkms", "make", "gcc"), DriverType.EBPF: ("clang", "llc", "make")}


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    status: str
    summary: str
    advice: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Verdict:
    exit_code: ExitCode
    message: str
    advice: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == ExitCode.OK

    def to_dict(self) -> dict:
        return {"ok": self.ok, "exit_code": int(self.exit_code), "message": self.message, "advice": self.advice}


@dataclasses.dataclass(frozen=True)
class RepoProbe:
    repo: str
    reachable: Optional[bool]  # None: not probed
    detail: str


@dataclasses.dataclass(frozen=True)
class ArtifactProbe:
    url: str
    outcome: str  # "found", "absent" or "error"
    detail: str
    version: str


@dataclasses.dataclass(frozen=True)
class Found:
    """A path looked for: where it is, or the error install would raise without it."""

    path: Optional[str]
    error: Optional[LoaderError] = None


@dataclasses.dataclass(frozen=True)
class Observations:
    settings: Settings
    kernel_release: str
    kernel_version: str
    arch: str
    os_name: str
    target_id: str
    target_notes: Tuple[str, ...]
    has_os_release: bool
    in_container: bool
    mounts: Dict[str, bool]
    modules_supported: bool
    enforces_signatures: bool
    lockdown: Optional[str]
    sig_enforce: bool
    modern_supported: bool
    modern_reason: str
    is_root: bool
    plan: object = None  # driver_loader.core.plan.Plan
    plan_error: Optional[LoaderError] = None
    loaded: Optional[LoadedModule] = None
    headers: Optional[Found] = None
    sources: Optional[Found] = None
    tools: Dict[str, Optional[str]] = dataclasses.field(default_factory=dict)
    repos: Tuple[RepoProbe, ...] = ()
    session_error: Optional[LoaderError] = None
    cached: Optional[str] = None
    artifacts: Tuple[ArtifactProbe, ...] = ()
    nearest: Tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------------------------------
# Reading the world


def observe(settings: Settings, *, kernel=None, modern_support=None) -> Observations:
    """Everything evaluate() needs. `kernel` (a KernelModules) and `modern_support` (returning ModernEbpfSupport)
    default to the running kernel's, as install's do."""
    from driver_loader.core.distros import discover
    from driver_loader.host.kernel_facts import kernel_roots, read_running_kernel
    from driver_loader.host.modern_ebpf import check_support
    from driver_loader.host.root import read_host_facts
    from driver_loader.kernel.modules import KernelModules
    from driver_loader.pipeline.install import Edges, resolve_for_install

    facts = read_host_facts(settings)
    target = discover(facts)
    kernel = kernel or KernelModules()
    running = read_running_kernel(facts.kernel_release, facts.arch, proc_root=kernel.proc_root,
                                  sys_root=kernel.sys_root, roots=kernel_roots(settings.host_root),
                                  running=settings.kernel_release is None)
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
    if plan is None or not plan.driver_type.has_artifact:
        return obs
    loaded = kernel.loaded(settings.kernel_module_name) if plan.driver_type is DriverType.KMOD else None
    obs = dataclasses.replace(
        obs,
        loaded=loaded,
        cached=_cached(plan),
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


def _cached(plan) -> Optional[str]:
    """The first candidate in the cache. Not verified here: the cache discards a tampered entry when it is looked up,
    and doctor changes nothing; install verifies it before use."""
    return next((c.cache_path for c in plan.candidates if os.path.isfile(c.cache_path)), None)


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
        repos = tuple(_probe_repo(session, repo) for repo in settings.repos)
        artifacts = _probe_candidates(session, plan.candidates, plan.driver_version)
        nearest: Tuple[str, ...] = ()
        if not any(a.outcome == "found" for a in artifacts):
            from driver_loader.net.index import VersionIndex

            index = VersionIndex(session.get_document)
            if settings.version_fallback:
                artifacts += _probe_fallback(session, index, plan, settings)
            if not any(a.outcome == "found" for a in artifacts):
                nearest = _nearest_kernels(index, plan, settings)
    return {"repos": repos, "artifacts": artifacts, "nearest": nearest}


def _probe_repo(session, repo: str) -> RepoProbe:
    parts = urlsplit(repo)
    if parts.scheme == "file":
        path = unquote(parts.path)
        exists = os.path.isdir(path)
        return RepoProbe(repo, exists, f"directory {path} " + ("exists" if exists else "does not exist"))
    try:
        session.get_stream(repo.rstrip("/") + "/").close()
        return RepoProbe(repo, True, "answered HTTP 200")
    except HttpFailure as failure:
        if failure.status is not None:
            return RepoProbe(repo, True, f"answered HTTP {failure.status}")
        return RepoProbe(repo, False, f"{redact_url(repo)}: {failure.message}")


def _probe_url(session, url: str, version: str) -> ArtifactProbe:
    try:
        session.get_stream(url).close()
        return ArtifactProbe(redact_url(url), "found", "HTTP 200", version)
    except HttpFailure as failure:
        outcome = "absent" if failure.not_found else "error"
        return ArtifactProbe(failure.url, outcome, failure.message, version)


def _probe_candidates(session, candidates, version: str) -> Tuple[ArtifactProbe, ...]:
    probes: List[ArtifactProbe] = []
    for candidate in candidates:
        for url in candidate.urls:
            probe = _probe_url(session, url, version)
            probes.append(probe)
            if probe.outcome == "found":
                return tuple(probes)
    return tuple(probes)


def _probe_fallback(session, index, plan, settings: Settings) -> Tuple[ArtifactProbe, ...]:
    listed = set()
    for repo in settings.repos:
        listed.update(index.versions(repo) or ())
    others = [v for v in plan.compatible.highest_first(listed) if v != plan.driver_version]
    probes: Tuple[ArtifactProbe, ...] = ()
    for version in others[:MAX_FALLBACK_VERSIONS]:
        probes += _probe_candidates(session, plan.candidates_for_version(version), version)
        if probes and probes[-1].outcome == "found":
            break
    return probes


def _nearest_kernels(index, plan, settings: Settings) -> Tuple[str, ...]:
    names = set()
    for repo in settings.repos:
        names.update(name for arch, name in index.artifacts(repo, plan.driver_version) or () if arch == plan.arch)
    prefix = f"{settings.driver_name}_{plan.target_id}_"
    return nearest_releases(plan.fixed_kernel_release, names, prefix, plan.driver_type.extension)


def nearest_releases(release: str, filenames, prefix: str, extension: str,
                     limit: int = MAX_NEAREST) -> Tuple[str, ...]:
    """The kernel releases of `prefix<release>_<version><extension>` files closest to `release`: longest common
    prefix first, then by name."""
    releases = set()
    for name in filenames:
        if name.startswith(prefix) and name.endswith(extension):
            middle = name[len(prefix):len(name) - len(extension)]
            releases.add(middle.rsplit("_", 1)[0] if "_" in middle else middle)
    releases.discard(release)

    def shared(other: str) -> int:
        return len(posixpath.commonprefix([release, other]))

    return tuple(sorted(releases, key=lambda r: (-shared(r), r))[:limit])


# ---------------------------------------------------------------------------------------------------------------------
# Judging


def evaluate(obs: Observations) -> Tuple[List[Check], Verdict]:
    plan = obs.plan
    kind = plan.driver_type if plan is not None else None
    checks = [
        _host_check(obs),
        _host_root_check(obs),
        _modules_check(obs),
        _signature_check(obs, kind),
        _modern_check(obs),
        _type_check(obs),
        _version_check(obs),
        _loaded_check(obs, kind),
        _privileges_check(obs, kind),
        _cache_check(obs, kind),
        _repos_check(obs, kind),
        _prebuilt_check(obs, kind),
        _build_check(obs, kind),
    ]
    return checks, _verdict(obs, kind)


def _host_check(obs: Observations) -> Check:
    summary = (f"kernel {obs.kernel_release} ({obs.kernel_version}) on {obs.arch}; {obs.os_name}; "
               f"target {obs.target_id}")
    if obs.target_id == UNDETERMINED:
        return Check("host", WARN, summary + " (no prebuilt driver can match an undetermined target)",
                     "; ".join(obs.target_notes) or "the distro could not be identified; only a local build can work")
    return Check("host", PASS, summary)


def _host_root_check(obs: Observations) -> Check:
    root = obs.settings.host_root
    if root == "/":
        if obs.in_container:
            return Check("host root", WARN, "/, but this looks like a container (/.dockerenv or /run/.containerenv): "
                         "if it is one, its own /etc is read instead of the host's",
                         "in a container, mount the host's /etc, /lib/modules, /usr and /boot under /host and set "
                         "HOST_ROOT=/host (or --host-root); on the host itself, ignore this")
        return Check("host root", PASS, "/ (running on the host)")
    missing = [(label, mount, effect) for label, _, mount, effect in HOST_MOUNTS if not obs.mounts.get(label)]
    if not missing:
        return Check("host root", PASS, f"{root}: the host's /etc, /lib/modules, /usr and /boot are mounted")
    summary = f"{root}: " + "; ".join(f"no host /{label} ({effect})" for label, _, effect in missing)
    return Check("host root", WARN, summary, "mount them like the Helm chart does: "
                 + " ".join(mount.replace("/host/", root.rstrip("/") + "/") for _, mount, _ in missing))


def _modules_check(obs: Observations) -> Check:
    if obs.modules_supported:
        return Check("modules", PASS, "the kernel can load modules (/proc/modules)")
    wanted = DriverType.KMOD in obs.settings.driver_types
    advice = ("use modern_ebpf, which this kernel supports" if obs.modern_supported
              else "kmod cannot work here; modern_ebpf is not usable either: " + obs.modern_reason)
    return Check("modules", WARN if wanted else PASS,
                 "the kernel cannot load modules (no /proc/modules), so kmod cannot be used",
                 advice if wanted else "")


def _signature_check(obs: Observations, kind: Optional[DriverType]) -> Check:
    policy = f"lockdown {obs.lockdown or 'none'}, sig_enforce {'Y' if obs.sig_enforce else 'N'}"
    if not obs.enforces_signatures:
        return Check("signatures", PASS, f"unsigned modules may load ({policy})")
    advice = ("prebuilt Falco modules are unsigned and will be refused; a DKMS build signed with an enrolled MOK key "
              "can load, or use modern_ebpf")
    if obs.lockdown == "confidentiality":
        advice += "; lockdown=confidentiality also stops eBPF programs from reading kernel memory"
    status = WARN if kind in (DriverType.KMOD, None) or obs.lockdown == "confidentiality" else PASS
    return Check("signatures", status, f"the kernel only loads signed modules ({policy})", advice)


def _modern_check(obs: Observations) -> Check:
    if obs.modern_supported:
        return Check("modern_ebpf", PASS, f"supported: {obs.modern_reason}")
    wanted = DriverType.MODERN_EBPF in obs.settings.driver_types
    return Check("modern_ebpf", WARN if wanted else SKIP, f"not supported: {obs.modern_reason}",
                 "use kmod (or ebpf with drivers older than 10.0.0)" if wanted else "")


def _type_check(obs: Observations) -> Check:
    requested = ",".join(str(t) for t in obs.settings.driver_types)
    if obs.plan is not None:
        return Check("driver type", PASS, f"{obs.plan.driver_type} (requested {requested})")
    error = obs.plan_error
    if error is not None and error.exit_code == ExitCode.UNSUPPORTED_HOST:
        return Check("driver type", FAIL, f"none of {requested} works here: " + "; ".join(error.tried),
                     error.hint)
    return Check("driver type", SKIP, f"not chosen (requested {requested})")


def _version_check(obs: Observations) -> Check:
    plan = obs.plan
    if plan is not None:
        return Check("driver version", PASS, f"{plan.driver_version} from {plan.requirement.source}; "
                     f"compatible: {plan.compatible}")
    error = obs.plan_error
    if error is not None and error.exit_code != ExitCode.UNSUPPORTED_HOST:
        return Check("driver version", FAIL, error.message, error.hint)
    return Check("driver version", SKIP, "not resolved: no driver type works here")


def _loaded_compatible(obs: Observations) -> bool:
    return obs.loaded is not None and obs.loaded.fits(obs.plan.compatible)


def _loaded_check(obs: Observations, kind: Optional[DriverType]) -> Check:
    name = obs.settings.kernel_module_name
    if kind is not DriverType.KMOD:
        return Check("loaded module", SKIP, "only a kernel module is loaded into the kernel")
    if obs.loaded is None:
        return Check("loaded module", PASS, f"{name} is not loaded; install will load it")
    if _loaded_compatible(obs):
        return Check("loaded module", PASS, f"{name} {obs.loaded.version} is loaded and within "
                     f"{obs.plan.compatible}: install will keep it")
    return Check("loaded module", WARN,
                 f"{name} {obs.loaded.version or '(no version)'} ({obs.loaded.initstate or 'unknown state'}) is loaded "
                 f"and outside {obs.plan.compatible}: install will unload and replace it",
                 "stop Falco first: a module in use cannot be unloaded")


def _privileges_check(obs: Observations, kind: Optional[DriverType]) -> Check:
    if kind is not DriverType.KMOD or _loaded_compatible(obs):
        return Check("privileges", SKIP, "root is only needed to load a kernel module")
    if obs.is_root:
        return Check("privileges", PASS, "running as root")
    return Check("privileges", FAIL, "not root: the kernel module cannot be loaded",
                 "run as root (in a container: privileged, or with CAP_SYS_MODULE), or use --type modern_ebpf")


def _not_needed(kind: Optional[DriverType]) -> str:
    return "no driver type was chosen" if kind is None else f"{kind} needs no artifact"


def _cache_check(obs: Observations, kind: Optional[DriverType]) -> Check:
    if kind is None or not kind.has_artifact:
        return Check("cache", SKIP, _not_needed(kind))
    if obs.cached:
        return Check("cache", PASS, f"{obs.cached} is cached (install verifies it before use)")
    return Check("cache", PASS, f"nothing cached yet under {obs.settings.cache_dir}")


def _repos_check(obs: Observations, kind: Optional[DriverType]) -> Check:
    if kind is None or not kind.has_artifact:
        return Check("repositories", SKIP, _not_needed(kind))
    if not obs.settings.download:
        return Check("repositories", SKIP, "downloads are off (--no-download)")
    if obs.session_error is not None:
        return Check("repositories", FAIL, obs.session_error.message, obs.session_error.hint)
    if not obs.repos:
        return Check("repositories", SKIP, "no artifact name can be made, so nothing would be downloaded")
    summary = "; ".join(f"{p.repo}: {p.detail}" if p.reachable else p.detail for p in obs.repos)
    unreachable = [p for p in obs.repos if not p.reachable]
    if not unreachable:
        return Check("repositories", PASS, summary)
    advice = []
    if any(urlsplit(p.repo).scheme == "file" for p in unreachable):
        advice.append("a file:// repository must be an existing directory (mount the mirror, or fix --repo)")
    if any(urlsplit(p.repo).scheme != "file" for p in unreachable):
        advice.append("check the network path: HTTPS_PROXY/NO_PROXY for a proxy, --ca-bundle for a private CA, "
                      "--http-timeout; or mirror the drivers and use --repo file:///path")
    return Check("repositories", FAIL if len(unreachable) == len(obs.repos) else WARN, summary, "; ".join(advice))


def _found(obs: Observations) -> Optional[ArtifactProbe]:
    return next((a for a in obs.artifacts if a.outcome == "found"), None)


def _prebuilt_check(obs: Observations, kind: Optional[DriverType]) -> Check:
    if kind is None or not kind.has_artifact:
        return Check("prebuilt", SKIP, _not_needed(kind))
    if not obs.settings.download:
        return Check("prebuilt", SKIP, "downloads are off (--no-download)")
    if not obs.plan.candidates:
        return Check("prebuilt", WARN, "no artifact name can be made: " + "; ".join(obs.plan.refusals),
                     "build it locally (--compile) or use --type modern_ebpf")
    found = _found(obs)
    if found is not None:
        fallback = "" if found.version == obs.plan.driver_version else f" (compatible version {found.version})"
        return Check("prebuilt", PASS, f"{found.url}{fallback}")
    errors = [a for a in obs.artifacts if a.outcome == "error"]
    names = ", ".join(obs.plan.filenames)
    if errors:
        return Check("prebuilt", WARN, f"could not tell whether {names} exists: "
                     + "; ".join(f"{a.url}: {a.detail}" for a in errors), "see the repositories check")
    advice = "build it locally (--compile, needs the kernel headers) or use --type modern_ebpf"
    if obs.nearest:
        advice = f"the repositories have {', '.join(obs.nearest)} for {obs.plan.target_id}; " + advice
    return Check("prebuilt", WARN, f"no repository has {names} in {obs.plan.compatible}", advice)


def _build_check(obs: Observations, kind: Optional[DriverType]) -> Check:
    if kind is None or not kind.has_artifact:
        return Check("build", SKIP, _not_needed(kind))
    if not obs.settings.compile:
        return Check("build", SKIP, "local builds are off (--no-compile)")
    problems = [found.error for found in (obs.headers, obs.sources) if found is not None and found.error]
    missing_tools = [tool for tool, path in obs.tools.items() if path is None]
    if not problems and not missing_tools:
        return Check("build", PASS, f"kernel headers at {obs.headers.path}, sources at {obs.sources.path}, "
                     f"{', '.join(obs.tools)} found")
    summary = "; ".join([p.message for p in problems] + ([f"{', '.join(missing_tools)} not in PATH"]
                                                          if missing_tools else []))
    advice = "; ".join([p.hint for p in problems if p.hint]
                       + ([f"install {', '.join(missing_tools)}"] if missing_tools else []))
    return Check("build", WARN, f"a local build would fail: {summary}", advice)


def _buildable(obs: Observations) -> bool:
    return (obs.settings.compile and obs.headers is not None and obs.headers.path is not None
            and obs.sources is not None and obs.sources.path is not None and all(obs.tools.values()))


def _verdict(obs: Observations, kind: Optional[DriverType]) -> Verdict:
    if obs.plan is None:
        error = obs.plan_error
        return Verdict(error.exit_code, f"install would fail: {error.message}", error.hint)
    if kind is DriverType.MODERN_EBPF:
        return Verdict(ExitCode.OK, "install would succeed: modern_ebpf is built into Falco, nothing to load")
    if kind is DriverType.KMOD and _loaded_compatible(obs):
        return Verdict(ExitCode.OK, f"install would succeed: the loaded module {obs.loaded.version} is kept")
    if kind is DriverType.KMOD and not obs.is_root:
        return Verdict(ExitCode.RUNTIME, "install would fail: loading a kernel module needs root",
                       "run as root, or use --type modern_ebpf")
    if obs.cached:
        return Verdict(ExitCode.OK, f"install would succeed with the cached {obs.cached}")
    found = _found(obs) if obs.settings.download else None
    if found is not None:
        return Verdict(ExitCode.OK, f"install would succeed by downloading {found.url}")
    if _buildable(obs):
        return Verdict(ExitCode.OK, f"install would build {kind} {obs.plan.driver_version} for "
                       f"{obs.plan.kernel_release} locally")
    if obs.settings.download and obs.session_error is not None:
        return Verdict(obs.session_error.exit_code, f"install would fail: {obs.session_error.message}",
                       obs.session_error.hint)
    # A repository that cannot be reached leaves its candidates in error; a missing file:// one answers "absent".
    if obs.settings.download and any(a.outcome == "error" for a in obs.artifacts):
        return Verdict(ExitCode.RUNTIME, "install would fail: no build is possible and the repositories could not "
                       "all be asked", "see the repositories check")
    if not obs.settings.download and not obs.settings.compile:
        advice = "allow --download or --compile, or use --type modern_ebpf"
    else:
        advice = "see the prebuilt and build checks; --type modern_ebpf needs no artifact"
    return Verdict(ExitCode.NO_DRIVER, f"install would fail: no {kind} is cached, downloadable or buildable here",
                   advice)


# ---------------------------------------------------------------------------------------------------------------------
# Rendering


def render_text(checks: Sequence[Check], verdict: Verdict) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        lines.append(f"{check.status:<4}  {check.name:<{width}}  {check.summary}")
        if check.advice:
            lines.append(f"{'':<4}  {'':<{width}}  next: {check.advice}")
    lines.append("")
    lines.append(f"{'ok' if verdict.ok else 'FAIL'}: {verdict.message} (exit {int(verdict.exit_code)})")
    if verdict.advice:
        lines.append(f"  next: {verdict.advice}")
    return "\n".join(lines) + "\n"


def render_json(checks: Sequence[Check], verdict: Verdict) -> str:
    return json.dumps({"checks": [c.to_dict() for c in checks], "verdict": verdict.to_dict()}, indent=2)


@click.command("doctor")
@resolution_options
@fetch_options
@build_options
@install_options
def command(**flags) -> None:
    """Check what install would meet on this node (host, kernel, driver, repositories, build) without changing
    anything; exit with the status install would end with."""
    settings = settings_from_flags(flags)
    checks, verdict = evaluate(observe(settings))
    if settings.output == "json":
        click.echo(render_json(checks, verdict))
    else:
        click.echo(render_text(checks, verdict), nl=False)
    if not verdict.ok:
        sys.exit(int(verdict.exit_code))
