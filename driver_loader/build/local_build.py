"""Building the driver on this host when no prebuilt one fits: DKMS for the kernel module, make for the legacy
eBPF probe. The one module that runs dkms, make and the compilers.

A build happens in a private temporary directory. Only a finished artifact that passed verification (its name,
version and kernel release are the ones asked for) reaches the cache; on any failure nothing is stored.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import shlex
import shutil
import tempfile
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from driver_loader.artifacts.cache import ArtifactCache, Cache, CacheEntry
from driver_loader.artifacts.elf import inspect_artifact, read_artifact
from driver_loader.artifacts.signature import required_signer
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import LoaderError, NoDriverError, UsageError, VerificationError
from driver_loader.core.headers import headers_hint
from driver_loader.core.naming import MODULE_SUFFIXES, unsafe_reason
from driver_loader.core.policy import VerifyPolicy, checksum_decision
from driver_loader.core.settings import DEFAULT_TOOL_TIMEOUT, Settings
from driver_loader.core.versions import publishes_ebpf_probe
from driver_loader.host.root import resolve_in_root
from driver_loader.output.log import get_logger
from driver_loader.system.runner import CommandResult, CommandRunner

if TYPE_CHECKING:
    from driver_loader.core.plan import Plan

log = get_logger()

VERIFIED_BY = "local-build"
LOG_TAIL_LINES = 40
_PROBE_TIMEOUT = 60.0
BUILD_TIMEOUT_KNOB = "--build-timeout SECONDS (or FALCOCTL_DRIVER_BUILD_TIMEOUT)"
TOOL_TIMEOUT_KNOB = "--tool-timeout SECONDS (or FALCOCTL_DRIVER_TOOL_TIMEOUT)"
# `gcc` and versioned siblings (`gcc-12`, `gcc-4.8`); not gcc-ar, gcc-nm, gcc-ranlib and the like.
_COMPILER_NAME = re.compile(r"^gcc(-\d+(\.\d+)*)?$")
# One `dkms status` line: DKMS 2.x `name, version, kernel, arch: state`, DKMS 3.x `name/version, kernel, arch: state`
# or `name/version: added`.
_DKMS_STATUS_LINE = re.compile(r"^(?P<name>[^,/:\s]+)\s*[,/]\s*(?P<version>[^,:\s]+)\s*[,:]")

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class DkmsLayout:
    """Where DKMS keeps its tree and installs modules; tests point these at a scratch directory."""

    dkms_tree: str = "/var/lib/dkms"
    modules_root: str = "/lib/modules"


SYSTEM_DKMS = DkmsLayout()


@dataclasses.dataclass(frozen=True)
class BuildResult:
    path: str
    sha256: str
    verified_by: str = VERIFIED_BY
    log_path: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class DkmsRemoval:
    removed: Tuple[str, ...]
    failed: Tuple[str, ...]


# ---------------------------------------------------------------------------------------------------------------------
# Pure helpers


def parse_dkms_status(output: str, name: str) -> Tuple[str, ...]:
    """The versions of module `name` that `dkms status` lists, in order, each once."""
    versions: List[str] = []
    for line in output.splitlines():
        match = _DKMS_STATUS_LINE.match(line.strip())
        if match and match["name"] == name and match["version"] not in versions:
            versions.append(match["version"])
    return tuple(versions)


def make_wrapper_script(compiler: str, kernel_dir: str) -> str:
    """The MAKE that DKMS runs: the driver's Makefile with a chosen compiler and the headers of the target kernel
    (its default, /lib/modules/$(uname -r)/build, is wrong whenever the target is not the running kernel)."""
    return (
        "#!/usr/bin/env bash\n"
        f'exec make CC={shlex.quote(compiler)} KERNELDIR={shlex.quote(kernel_dir)} "$@"\n'
    )


def dkms_install_argv(
    name: str,
    version: str,
    kernel_release: str,
    wrapper: str,
    *,
    kernel_source_dir: Optional[str] = None,
    source_tree: Optional[str] = None,
) -> List[str]:
    argv = ["dkms", "install", f"--directive=MAKE='{wrapper}'", "-m", name, "-v", version, "-k", kernel_release]
    if kernel_source_dir:
        argv += ["--kernelsourcedir", kernel_source_dir]
    if source_tree:
        argv += ["--sourcetree", source_tree]
    return argv


def tail_lines(text: str, count: int = LOG_TAIL_LINES) -> List[str]:
    return text.rstrip("\n").splitlines()[-count:] if text.strip() else []


# ---------------------------------------------------------------------------------------------------------------------
# Finding what a build needs


@dataclasses.dataclass(frozen=True)
class FoundPath:
    path: str
    under_host_root: bool


def _lookup(settings: Settings, relpath: str) -> Tuple[Optional[FoundPath], List[str]]:
    """`relpath` as a directory under / first (what DKMS sees by default), then under the host root."""
    checked = [posixpath.join("/", relpath)]
    if os.path.isdir(checked[0]):
        return FoundPath(checked[0], False), checked
    if settings.host_root != "/":
        checked.append(posixpath.join(settings.host_root, relpath))
        resolved = resolve_in_root(settings.host_root, relpath)
        if resolved is not None and os.path.isdir(resolved):
            return FoundPath(resolved, True), checked
    return None, checked


def find_sources(settings: Settings, version: str) -> FoundPath:
    dirname = f"{settings.driver_name}-{version}"
    found, checked = _lookup(settings, f"usr/src/{dirname}")
    if found is None:
        raise NoDriverError(
            f"the {settings.driver_name} driver sources {version} are not installed (expected /usr/src/{dirname})",
            tried=[f"looked for {path}" for path in checked],
            hint=(
                f"install the falco package, which ships /usr/src/{dirname}, or the driver's DKMS source package "
                "(like falcosecurity-scap-dkms); in a container, mount the host's /usr/src under the host root "
                "(e.g. -v /usr/src:/host/usr/src with HOST_ROOT=/host)"
            ),
        )
    return found


def find_headers(settings: Settings, kernel_release: str, target_id: str) -> FoundPath:
    found, checked = _lookup(settings, f"lib/modules/{kernel_release}/build")
    if found is None:
        hint = headers_hint(target_id, kernel_release)
        if settings.host_root != "/":
            hint += f"; in a container, also mount the host's /lib/modules and /usr/src under {settings.host_root}"
        raise NoDriverError(
            f"kernel headers for {kernel_release} are not installed",
            tried=[f"looked for {path}" for path in checked],
            hint=hint,
        )
    return found


def find_compilers(runner: CommandRunner) -> Tuple[str, ...]:
    """gcc from PATH, then its versioned siblings in name order, keeping those that work (answer
    `-print-search-dirs` with an `install:` line) and skipping links to a compiler already kept."""
    gcc = runner.which("gcc")
    if gcc is None:
        return ()
    directory = posixpath.dirname(gcc)
    try:
        siblings = sorted(n for n in os.listdir(directory) if _COMPILER_NAME.match(n))
    except OSError:
        siblings = []
    paths = [gcc] + [posixpath.join(directory, n) for n in siblings if posixpath.join(directory, n) != gcc]
    found: List[str] = []
    seen = set()
    for path in paths:
        real = os.path.realpath(path)
        if real in seen:
            continue
        result = runner.run([path, "-print-search-dirs"], timeout=_PROBE_TIMEOUT)
        if any(line.startswith("install:") for line in result.output.splitlines()):
            found.append(path)
            seen.add(real)
    return tuple(found)


# ---------------------------------------------------------------------------------------------------------------------
# Kernel module (DKMS)


def _module_stems(settings: Settings) -> Tuple[str, ...]:
    return tuple(dict.fromkeys((settings.driver_name, settings.kernel_module_name)))


def find_built_module(
    settings: Settings, version: str, kernel_release: str, arch: str, runner: CommandRunner, layout: DkmsLayout
) -> Optional[str]:
    """Where this DKMS version put the module: its tree, /lib/modules/<release>/updates/dkms or extra, else where
    modinfo says it is."""
    directories = (
        posixpath.join(layout.dkms_tree, settings.driver_name, version, kernel_release, arch, "module"),
        posixpath.join(layout.modules_root, kernel_release, "updates", "dkms"),
        posixpath.join(layout.modules_root, kernel_release, "extra"),
        posixpath.join(layout.modules_root, kernel_release, "kernel", "extra"),
    )
    for directory in directories:
        for stem in _module_stems(settings):
            for suffix in MODULE_SUFFIXES:
                path = posixpath.join(directory, stem + suffix)
                if os.path.isfile(path):
                    return path
    result = runner.run(
        ["modinfo", "-k", kernel_release, "-F", "filename", settings.kernel_module_name], timeout=_PROBE_TIMEOUT
    )
    if result.ok:
        path = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
        if path.startswith("/") and os.path.isfile(path):
            return path
    return None


def dkms_make_log(
    settings: Settings, version: str, kernel_release: str, arch: str, layout: DkmsLayout
) -> Optional[str]:
    """The newest make.log: DKMS 2 keeps it in build/, DKMS 3 moves it to <release>/<arch>/log/ after a build."""
    base = posixpath.join(layout.dkms_tree, settings.driver_name, version)
    logs = [
        path
        for path in (
            posixpath.join(base, "build", "make.log"),
            posixpath.join(base, kernel_release, arch, "log", "make.log"),
        )
        if os.path.isfile(path)
    ]
    return max(logs, key=os.path.getmtime) if logs else None


def _read_tail(path: str) -> List[str]:
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(0, stream.tell() - 256 * 1024))
            return tail_lines(stream.read().decode("utf-8", "replace"))
    except OSError as exc:
        return [f"(cannot read {path}: {exc.strerror or exc})"]


def _build_kmod(
    plan: Plan, settings: Settings, runner: CommandRunner, workdir: str, layout: DkmsLayout, progress: Progress
) -> Tuple[str, Optional[str]]:
    name, version, release = settings.driver_name, plan.driver_version, plan.kernel_release
    sources = find_sources(settings, version)
    headers = find_headers(settings, release, plan.target_id)
    missing = [tool for tool in ("dkms", "make") if runner.which(tool) is None]
    if missing:
        raise NoDriverError(
            f"cannot build the kernel module: {' and '.join(missing)} not found in PATH",
            tried=[f"looked for {tool} in PATH" for tool in missing],
            hint="install dkms, make and gcc, or use a prebuilt driver or the modern_ebpf driver",
        )
    compilers = find_compilers(runner)
    if not compilers:
        raise NoDriverError(
            "cannot build the kernel module: no working gcc found",
            tried=["gcc in PATH and its gcc-N siblings (-print-search-dirs)"],
            hint="install gcc (the version the kernel was built with works best)",
        )
    wrapper = posixpath.join(workdir, "falco-dkms-make")
    argv_extra = dict(
        kernel_source_dir=headers.path if headers.under_host_root else None,
        source_tree=posixpath.dirname(sources.path) if sources.under_host_root else None,
    )
    tried: List[str] = []
    last: Optional[CommandResult] = None
    for compiler in compilers:
        with open(wrapper, "w") as script:
            script.write(make_wrapper_script(compiler, headers.path))
        os.chmod(wrapper, 0o700)
        progress(f"building the {name} kernel module {version} for {release} with DKMS and {compiler}")
        log.info("running dkms install", module=name, version=version, kernel_release=release, compiler=compiler)
        last = runner.run(
            dkms_install_argv(name, version, release, wrapper, **argv_extra), timeout=settings.build_timeout
        )
        if last.ok:
            built = find_built_module(settings, version, release, plan.arch, runner, layout)
            if built is not None:
                log.info("dkms built the module", path=built, compiler=compiler)
                return built, dkms_make_log(settings, version, release, plan.arch, layout)
            tried.append(f"dkms install with {compiler} succeeded, but no {name}.ko was found in the DKMS tree, "
                         f"{layout.modules_root}/{release}/updates/dkms or by modinfo")
            break
        tried.append(f"dkms install with {compiler}: {last.describe(settings.build_timeout)}")
        log.warning("dkms install failed", compiler=compiler, result=last.describe(settings.build_timeout))
    make_log = dkms_make_log(settings, version, release, plan.arch, layout)
    if make_log is not None:
        tried.append(f"{make_log} (last {LOG_TAIL_LINES} lines):")
        tried.extend(_read_tail(make_log))
    elif last is not None:
        tried.append(f"no make.log under {layout.dkms_tree}/{name}/{version}; dkms output (last lines):")
        tried.extend(tail_lines(last.output))
    if last is not None and last.timed_out:
        raise NoDriverError(
            f"DKMS did not finish building the {name} kernel module {version} for kernel {release} within "
            f"{settings.build_timeout:g} s",
            tried=tried,
            hint=f"give the build more time with {BUILD_TIMEOUT_KNOB} (a build under emulation or on a busy node "
            "takes minutes), or use a prebuilt driver or the modern_ebpf driver",
        )
    raise NoDriverError(
        f"DKMS could not build the {name} kernel module {version} for kernel {release}"
        + (f" (see {make_log})" if make_log else ""),
        tried=tried,
        hint="read the build log above; the kernel headers must match the running kernel, and a newer driver "
        "version, a prebuilt driver or the modern_ebpf driver may work where this build does not",
    )


# ---------------------------------------------------------------------------------------------------------------------
# Legacy eBPF probe (make)


def _build_ebpf(
    plan: Plan, settings: Settings, runner: CommandRunner, workdir: str, progress: Progress
) -> Tuple[str, None]:
    version, release = plan.driver_version, plan.kernel_release
    if not publishes_ebpf_probe(version):
        raise NoDriverError(
            f"driver {version} has no legacy eBPF probe (only drivers < 10.0.0 do)",
            hint="use the modern_ebpf driver (--type modern_ebpf) or the kernel module (--type kmod)",
        )
    sources = find_sources(settings, version)
    if not os.path.isdir(posixpath.join(sources.path, "bpf")):
        raise NoDriverError(
            f"the driver sources in {sources.path} have no bpf/ directory, so they cannot build the eBPF probe",
            hint="use the modern_ebpf driver (--type modern_ebpf) or the kernel module (--type kmod)",
        )
    headers = find_headers(settings, release, plan.target_id)
    missing = [tool for tool in ("clang", "llc", "make") if runner.which(tool) is None]
    if missing:
        raise NoDriverError(
            f"cannot build the eBPF probe: {', '.join(missing)} not found in PATH",
            tried=[f"looked for {tool} in PATH" for tool in missing],
            hint="install clang, llvm (for llc) and make, or use the modern_ebpf driver",
        )
    # The bpf/ Makefile includes ../driver_config.h and friends: copy the whole tree, never build in /usr/src.
    tree = posixpath.join(workdir, "src")
    shutil.copytree(sources.path, tree, symlinks=True)
    bpf_dir = posixpath.join(tree, "bpf")
    progress(f"building the eBPF probe {version} for {release} with clang")
    log.info("building the eBPF probe", version=version, kernel_release=release, headers=headers.path)
    result = runner.run(["make", "-C", bpf_dir, f"KERNELDIR={headers.path}"], timeout=settings.build_timeout)
    probe = posixpath.join(bpf_dir, "probe.o")
    if result.ok and os.path.isfile(probe):
        return probe, None
    outcome = result.describe(settings.build_timeout) if not result.ok else "make succeeded but wrote no probe.o"
    raise NoDriverError(
        f"could not build the eBPF probe {version} for kernel {release}: {outcome}",
        tried=[f"make -C {bpf_dir} KERNELDIR={headers.path}: {outcome}", f"make output (last {LOG_TAIL_LINES} lines):"]
        + tail_lines(result.output),
        hint=(f"give the build more time with {BUILD_TIMEOUT_KNOB}; " if result.timed_out else "")
        + "the kernel headers must match the running kernel and clang must be recent enough for it; "
        "the modern_ebpf driver needs no build",
    )


# ---------------------------------------------------------------------------------------------------------------------
# Verification and the public entry points


def verify_built_artifact(plan: Plan, settings: Settings, data: bytes, label: str) -> None:
    """The artifact a build produced must be exactly what was asked for: right kind, name, version, release."""
    info = inspect_artifact(data, filename=label)
    problems = []
    expected_kind = "kmod" if plan.driver_type is DriverType.KMOD else "ebpf"
    if info.kind != expected_kind:
        problems.append(f"it is a {info.kind} artifact, not {expected_kind}")
    if info.kind == "kmod":
        if info.name != settings.kernel_module_name:
            problems.append(f"modinfo name is {info.name!r}, expected {settings.kernel_module_name!r}")
        built_release = (info.vermagic or "").split(" ", 1)[0]
        if built_release != plan.kernel_release:
            problems.append(f"vermagic release is {built_release!r}, expected {plan.kernel_release!r}")
        if info.arch != plan.arch:
            problems.append(f"it is built for {info.arch or info.machine}, expected {plan.arch}")
    elif info.kind == "ebpf" and info.kernel_version != plan.kernel_release:
        problems.append(f"kernel_version is {info.kernel_version!r}, expected {plan.kernel_release!r}")
    if info.driver_version != plan.driver_version:
        problems.append(f"driver version is {info.driver_version!r}, expected {plan.driver_version!r}")
    if problems:
        raise VerificationError(
            f"the locally built driver {label} is not the one requested",
            tried=problems,
            hint="the sources in /usr/src may not be the requested driver version; nothing was stored",
        )


def _reusable(cache: Cache, path: str, settings: Settings) -> Optional[CacheEntry]:
    """A cached entry at the build's destination, when the policy accepts its checksum record; otherwise the
    build runs and replaces it (e.g. a download only recorded, under --verify strict)."""
    entry = cache.lookup(path)
    if entry is None:
        return None
    decision = checksum_decision(entry.record, policy=VerifyPolicy(settings.verify.policy), pin=None,
                                 signer=required_signer(settings))
    if not decision.usable:
        log.info("not reusing the cached artifact; building", path=path, reason=decision.reason)
        return None
    return entry


def build_artifact(
    plan: Plan,
    settings: Settings,
    *,
    runner: Optional[CommandRunner] = None,
    cache: Optional[Cache] = None,
    progress: Optional[Progress] = None,
    layout: DkmsLayout = SYSTEM_DKMS,
) -> BuildResult:
    """Build the plan's kmod or legacy eBPF artifact for the running kernel (`plan.kernel_release`, never the
    fixed release) and store it, verified, at the first candidate's cache path. An artifact already cached there
    is returned without building. `progress` receives one line per build step."""
    runner = runner or CommandRunner()
    report = progress or (lambda _message: None)
    if plan.driver_type not in (DriverType.KMOD, DriverType.EBPF):
        raise UsageError(f"the {plan.driver_type} driver is not built: it ships inside Falco",
                         hint="build applies to --type kmod or --type ebpf")
    for label, value in (("driver version", plan.driver_version), ("kernel release", plan.kernel_release)):
        reason = unsafe_reason(label, value)
        if reason:
            raise UsageError(f"cannot build: {reason}")
    if not plan.candidates:
        raise NoDriverError(
            f"no artifact name can be made for this host, so there is nowhere to put a {plan.driver_type} build",
            tried=plan.refusals,
            hint="check the driver version and kernel release",
        )
    cache = cache or ArtifactCache(settings.cache_dir)
    destination = plan.candidates[0].cache_path

    cached = _reusable(cache, destination, settings)
    if cached is not None:
        log.info("reusing the cached artifact instead of building", path=destination)
        return BuildResult(cached.path, cached.sha256, cached.verified_by, None)
    if plan.driver_type is DriverType.KMOD and os.geteuid() != 0:
        raise LoaderError(
            "building the kernel module with DKMS needs root",
            tried=[f"effective user id {os.geteuid()}"],
            hint="run falco-driver-loader as root (DKMS writes to /var/lib/dkms and /lib/modules)",
        )

    with cache.lock(destination):
        cached = _reusable(cache, destination, settings)
        if cached is not None:
            return BuildResult(cached.path, cached.sha256, cached.verified_by, None)
        workdir = tempfile.mkdtemp(prefix="falco-driver-build-")
        try:
            if plan.driver_type is DriverType.KMOD:
                built, log_path = _build_kmod(plan, settings, runner, workdir, layout, report)
            else:
                built, log_path = _build_ebpf(plan, settings, runner, workdir, report)
            # Decompress into our own directory: the cache gets a plain ELF that nobody else can change under us.
            data = read_artifact(built)
            verify_built_artifact(plan, settings, data, built)
            artifact = posixpath.join(workdir, posixpath.basename(destination))
            with open(artifact, "wb") as out:
                out.write(data)
            entry = cache.store_file(destination, artifact, verified_by=VERIFIED_BY)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    log.info("stored the locally built driver", path=destination, sha256=entry.sha256)
    report(f"built {destination}")
    return BuildResult(entry.path, entry.sha256, VERIFIED_BY, log_path)


def remove_dkms_state(name: str, runner: Optional[CommandRunner] = None, *,
                      timeout: float = DEFAULT_TOOL_TIMEOUT) -> DkmsRemoval:
    """Remove every version of module `name` from DKMS (all kernels). No dkms on this host is not an error."""
    runner = runner or CommandRunner()
    if runner.which("dkms") is None:
        log.info("skipping dkms remove: dkms not found")
        return DkmsRemoval((), ())
    status = runner.run(["dkms", "status", "-m", name], timeout=timeout)
    if not status.ok:
        log.warning("cannot list dkms modules", module=name, result=status.describe(timeout),
                    output=" ".join(tail_lines(status.output, 3)))
        return DkmsRemoval((), ())
    removed: List[str] = []
    failed: List[str] = []
    for version in parse_dkms_status(status.stdout, name):
        result = runner.run(["dkms", "remove", "-m", name, "-v", version, "--all"], timeout=timeout)
        if result.ok:
            removed.append(version)
            log.info("removed from dkms", module=name, version=version)
        else:
            failed.append(version)
            log.warning("dkms remove failed", module=name, version=version,
                        result=result.describe(timeout), output=" ".join(tail_lines(result.output, 3)))
    return DkmsRemoval(tuple(removed), tuple(failed))
