"""`doctor`'s judgement: observations of a node in, checks (pass, warn, fail or skip, with advice) and a verdict
out. Pure. Whether an artifact may be used and what install would do next come from the acquisition policy, so
doctor agrees with `install` by construction; the exit status is the one install with the same options would end
with: 0 when it would succeed, else 6 (unsupported host), 4 (only refused artifacts), 3 (no driver), 2 (no driver
version) or 1 (anything else, e.g. the repositories could not be reached, or not root).
"""

from __future__ import annotations

import dataclasses
import enum
import posixpath
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from packaging.version import Version

from driver_loader.core.distros import UNDETERMINED
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import ExitCode, LoaderError
from driver_loader.core.plan import Plan
from driver_loader.core.policy import SIGNATURE_HINT, STRICT_HINT, AcquisitionPlan, StepKind, nothing_usable_exit_code
from driver_loader.core.settings import Settings
from driver_loader.core.versions import release_core


class CheckStatus(str, enum.Enum):
    PASS = "pass"
    WARN = "warn"  # install would work around it, or it may bite later
    FAIL = "fail"  # install would fail on it
    SKIP = "skip"  # not relevant to the chosen driver or options

    def __str__(self) -> str:
        return self.value


PASS, WARN, FAIL, SKIP = CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL, CheckStatus.SKIP
MAX_NEAREST = 3
# What the loader reads under a host root, and how the Helm chart mounts it.
HOST_MOUNTS = (
    ("etc", "etc/os-release", "-v /etc:/host/etc:ro", "the distro is detected from the wrong os-release"),
    ("lib/modules", "lib/modules/{release}", "-v /lib/modules:/host/lib/modules",
     "kernel headers, in-tree modules and the vermagic cannot be found"),
    ("usr", "usr/src", "-v /usr:/host/usr:ro", "the host's kernel headers and driver sources cannot be found"),
    ("boot", "boot", "-v /boot:/host/boot:ro", "the kernel config cannot be read"),
)
TOOLS = {DriverType.KMOD: ("dkms", "make", "gcc"), DriverType.EBPF: ("clang", "llc", "make")}


@dataclasses.dataclass(frozen=True)
class ModuleState:
    """The loaded module as observed, and whether it is inside the plan's compatible range."""

    name: str
    version: Optional[str]
    initstate: Optional[str]
    fits: bool


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    summary: str
    advice: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status.value, "summary": self.summary, "advice": self.advice}


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
    # Found, but --verify strict would refuse it: no pin, no sidecar and no SHA256SUMS entry for it; or (unsigned)
    # --verify-key requires a signature and none is published beside it.
    unverifiable: bool = False
    unsigned: bool = False


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
    plan: Optional[Plan] = None
    plan_error: Optional[LoaderError] = None
    loaded: Optional[ModuleState] = None
    headers: Optional[Found] = None
    sources: Optional[Found] = None
    tools: Dict[str, Optional[str]] = dataclasses.field(default_factory=dict)
    repos: Tuple[RepoProbe, ...] = ()
    session_error: Optional[LoaderError] = None
    acquisition: Optional[AcquisitionPlan] = None  # the policy's steps, from the same observations install makes
    artifacts: Tuple[ArtifactProbe, ...] = ()
    nearest: Tuple[str, ...] = ()
    falco_libs: Optional[str] = None  # `falco --version`'s libs_version, read for the legacy eBPF probe only
    signer: Optional[str] = None  # the id of the --verify-key key, when it could be read
    signer_error: Optional[LoaderError] = None  # why the --verify-key key could not be read


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
        _probe_reader_check(obs, kind),
        _artifact_signatures_check(obs, kind),
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


# libs before 0.22.0 map each CPU's perf buffer twice, the two mappings overlapping. The fix for CVE-2025-38563
# ("perf: Prevent VMA split of buffer mappings", mainline 6.17, backported to stable kernels from August 2025, e.g.
# Debian's 6.12.43) refuses the second mapping, so Falco cannot read the legacy probe on those kernels whatever driver
# is loaded. libs 0.22.0 maps each buffer once.
PROBE_MMAP_FIXED_LIBS = "0.22.0"


def _probe_reader_check(obs: Observations, kind: Optional[DriverType]) -> Check:
    if kind is not DriverType.EBPF:
        return Check("probe reader", SKIP, "only the legacy eBPF probe depends on how Falco maps its buffers")
    if obs.falco_libs is None:
        return Check("probe reader", SKIP, "Falco's libs version is unknown (no `falco --version` answered)")
    libs = release_core(obs.falco_libs)
    if libs is None:
        return Check("probe reader", SKIP, f"Falco's libs version {obs.falco_libs!r} cannot be compared")
    if libs >= Version(PROBE_MMAP_FIXED_LIBS):
        return Check("probe reader", PASS, f"Falco's libs {obs.falco_libs} map the probe's perf buffers once")
    return Check(
        "probe reader", WARN,
        f"Falco's libs {obs.falco_libs} (older than {PROBE_MMAP_FIXED_LIBS}) map each perf buffer twice, which "
        "kernels with the fix for CVE-2025-38563 (6.17, and stable kernels from August 2025 such as Debian's "
        f"6.12.43) refuse: on kernel {obs.kernel_release} ({obs.kernel_version}) Falco may fail with \"unable to mmap "
        "the perf-buffer ... Invalid argument\" even though the probe is fine",
        f"upgrade Falco to a release built on libs {PROBE_MMAP_FIXED_LIBS} or later, or use --type modern_ebpf "
        "or kmod",
    )


def _artifact_signatures_check(obs: Observations, kind: Optional[DriverType]) -> Check:
    if kind is not None and not kind.has_artifact:
        return Check("artifact signatures", SKIP, f"{kind} has no artifact to sign")
    key = obs.settings.verify.key
    if not key:
        return Check("artifact signatures", SKIP, "neither required nor checked (no --verify-key): an artifact is "
                     "trusted on its checksum alone",
                     "to accept only drivers your builder signed, pass --verify-key with its public key "
                     "(FALCOCTL_DRIVER_VERIFY_KEY)")
    if obs.signer_error is not None:
        return Check("artifact signatures", FAIL, obs.signer_error.message, obs.signer_error.hint)
    return Check("artifact signatures", PASS, f"required: a valid signature by key {obs.signer} ({key}); a driver "
                 "built on this node needs none")


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
    return obs.acquisition is not None and obs.acquisition.kinds()[:1] == (StepKind.KEEP_LOADED,)


def _loaded_check(obs: Observations, kind: Optional[DriverType]) -> Check:
    name = obs.settings.kernel_module_name
    if kind is not DriverType.KMOD:
        return Check("loaded module", SKIP, "only a kernel module is loaded into the kernel")
    assert obs.plan is not None  # a driver type comes from the plan
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
    judged = obs.acquisition.cache if obs.acquisition is not None else ()
    usable = [j for j in judged if j.decision.usable]
    refused = [j for j in judged if not j.decision.usable]
    if usable:
        return Check("cache", PASS, f"{usable[0].entry.path} is cached, {usable[0].decision.reason} (install runs the "
                     "pre-load checks on it before use)")
    if refused:
        return Check("cache", WARN, "; ".join(f"{j.entry.path} is cached but install will not use it: "
                                             f"{j.decision.reason}" for j in refused),
                     "; ".join(dict.fromkeys(j.decision.hint for j in refused if j.decision.hint)))
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
    """The first artifact install could download and keep (the policy refuses one without a checksum under
    --verify strict before downloading it)."""
    return next((a for a in obs.artifacts if a.outcome == "found" and not a.unverifiable), None)


def _prebuilt_check(obs: Observations, kind: Optional[DriverType]) -> Check:
    if kind is None or not kind.has_artifact:
        return Check("prebuilt", SKIP, _not_needed(kind))
    if not obs.settings.download:
        return Check("prebuilt", SKIP, "downloads are off (--no-download)")
    assert obs.plan is not None  # a driver type comes from the plan
    if not obs.plan.candidates:
        return Check("prebuilt", WARN, "no artifact name can be made: " + "; ".join(obs.plan.refusals),
                     "build it locally (--compile) or use --type modern_ebpf")
    found = _found(obs)
    if found is not None:
        fallback = "" if found.version == obs.plan.driver_version else f" (compatible version {found.version})"
        return Check("prebuilt", PASS, f"{found.url}{fallback}")
    errors = [a for a in obs.artifacts if a.outcome == "error"]
    names = ", ".join(obs.plan.filenames)
    unverifiable = [a for a in obs.artifacts if a.outcome == "found" and a.unverifiable]
    if unverifiable and unverifiable[0].unsigned:
        return Check("prebuilt", WARN, f"{unverifiable[0].url} exists, but no signature is published beside it "
                     f"(.sig) and --verify-key requires one by key {obs.signer}", SIGNATURE_HINT)
    if unverifiable:
        return Check("prebuilt", WARN, f"{unverifiable[0].url} exists, but no checksum is published for it and "
                     "--verify strict refuses it", STRICT_HINT)
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
    if obs.signer_error is not None:
        return Check("build", SKIP, "not looked at: install would stop on the --verify-key key first")
    assert obs.headers is not None and obs.sources is not None  # looked for whenever a build is on
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
        assert error is not None  # no plan, because resolving it failed
        return Verdict(error.exit_code, f"install would fail: {error.message}", error.hint)
    if obs.signer_error is not None and kind is not None and kind.has_artifact:
        return Verdict(obs.signer_error.exit_code, f"install would fail: {obs.signer_error.message}",
                       obs.signer_error.hint)
    if kind is DriverType.MODERN_EBPF:
        return Verdict(ExitCode.OK, "install would succeed: modern_ebpf is built into Falco, nothing to load")
    if kind is DriverType.KMOD and _loaded_compatible(obs):
        assert obs.loaded is not None  # the policy keeps only a loaded module
        return Verdict(ExitCode.OK, f"install would succeed: the loaded module {obs.loaded.version} is kept")
    if kind is DriverType.KMOD and not obs.is_root:
        return Verdict(ExitCode.RUNTIME, "install would fail: loading a kernel module needs root",
                       "run as root, or use --type modern_ebpf")
    steps = obs.acquisition.steps if obs.acquisition is not None else ()
    cached = next((step.path for step in steps if step.kind is StepKind.USE_CACHE), None)
    if cached:
        return Verdict(ExitCode.OK, f"install would succeed with the cached {cached}")
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
    if obs.settings.download and any(a.outcome == "found" and a.unsigned for a in obs.artifacts):
        return Verdict(ExitCode.VERIFICATION, "install would fail: the prebuilt driver has no signature beside it and "
                       f"--verify-key requires one by key {obs.signer}", SIGNATURE_HINT)
    if obs.settings.download and any(a.outcome == "found" and a.unverifiable for a in obs.artifacts):
        return Verdict(ExitCode.VERIFICATION, "install would fail: the prebuilt driver has no published checksum and "
                       "--verify strict refuses it", STRICT_HINT)
    if not obs.settings.download and not obs.settings.compile:
        advice = "allow --download or --compile, or use --type modern_ebpf"
    else:
        advice = "see the prebuilt and build checks; --type modern_ebpf needs no artifact"
    if obs.acquisition is not None:
        refused = [j.decision.hint for j in obs.acquisition.cache if not j.decision.usable and j.decision.hint]
        advice = "; ".join(dict.fromkeys(refused + [advice]))
        code = nothing_usable_exit_code(obs.acquisition)
    else:
        code = ExitCode.NO_DRIVER
    return Verdict(code, f"install would fail: no {kind} is cached, downloadable or buildable here", advice)


