"""The local build fallback, driven through a fake command runner: exact command lines, compiler fallback,
log reporting, verification, and the cache hand-off. The artifacts DKMS and make "produce" are real ELF objects
compiled here from a few lines of C."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from typing import Callable, List, Optional

import pytest
from elf_fixtures import compress_file, make_bpf_probe, make_kmod

from driver_loader.artifacts.cache import ArtifactCache, CacheEntry
from driver_loader.build import local_build as build
from driver_loader.build.local_build import (
    BuildResult,
    CommandResult,
    CommandRunner,
    DkmsLayout,
    build_artifact,
    parse_dkms_status,
    remove_dkms_state,
)
from driver_loader.core.distros.base import HostFacts
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import ExitCode, LoaderError, NoDriverError, UsageError, VerificationError
from driver_loader.core.plan import DriverRequirement, make_plan
from driver_loader.core.settings import Settings

# What uname -r says. Release and version are made up so that no real /lib/modules or /usr/src entry matches.
RELEASE = "6.1.0-9999-amd64"
DEBIAN_UNAME_V = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2025-10-01)"  # makes the fixed release 6.1.192-2-amd64
VERSION = "8.99.0+test"
DKMS_FAILED = 10


# ---------------------------------------------------------------------------------------------------------------------
# ELF fixtures


@pytest.fixture(scope="session")
def make_module(tmp_path_factory) -> Callable[..., bytes]:
    """The bytes of a kernel-module look-alike with this name, version and vermagic release."""

    def make(name: str = "falco", version: str = VERSION, release: str = RELEASE) -> bytes:
        vermagic = f"{release} SMP preempt mod_unload modversions "
        return make_kmod(tmp_path_factory.mktemp("kmod"), name=name, version=version, vermagic=vermagic).read_bytes()

    return make


@pytest.fixture(scope="session")
def make_probe(tmp_path_factory) -> Callable[..., bytes]:
    """The bytes of a legacy eBPF probe look-alike for this driver version and kernel release."""

    def make(version: str = VERSION, release: str = RELEASE) -> bytes:
        directory = tmp_path_factory.mktemp("ebpf")
        return make_bpf_probe(directory, kernel_version=release, probe_version=version).read_bytes()

    return make


@pytest.fixture(scope="session")
def falco_module(make_module) -> bytes:
    """Made once per session, so that it exists before a test's fake file system does."""
    return make_module()


# ---------------------------------------------------------------------------------------------------------------------
# The fake runner


@dataclasses.dataclass
class Call:
    argv: List[str]
    timeout: float
    env: Optional[dict]
    cwd: Optional[str]
    wrapper: Optional[str] = None  # the MAKE script's content while dkms install ran


def ok(stdout: str = "") -> CommandResult:
    return CommandResult((), 0, stdout, "")


def failed(code: int = DKMS_FAILED, output: str = "") -> CommandResult:
    return CommandResult((), code, output, "")


class FakeRunner(CommandRunner):
    """Answers `which` from a table and hands each command to `handler` (default: success); records every call."""

    def __init__(self, programs: dict, handler: Optional[Callable[[Call], CommandResult]] = None) -> None:
        self.programs = programs
        self.handler = handler or (lambda call: ok())
        self.calls: List[Call] = []

    def which(self, program: str) -> Optional[str]:
        return self.programs.get(program)

    def run(self, argv, *, timeout, env=None, cwd=None) -> CommandResult:
        call = Call(list(argv), timeout, env, cwd)
        wrapper = _directive_wrapper(call.argv)
        if wrapper is not None:
            with open(wrapper) as handle:
                call.wrapper = handle.read()
        self.calls.append(call)
        return self.handler(call)

    def commands(self, first_word: str) -> List[Call]:
        return [c for c in self.calls if os.path.basename(c.argv[0]) == first_word]

    def dkms_installs(self) -> List[Call]:
        return [c for c in self.commands("dkms") if c.argv[1] == "install"]


def _directive_wrapper(argv: List[str]) -> Optional[str]:
    for arg in argv:
        if arg.startswith("--directive=MAKE='"):
            return arg[len("--directive=MAKE='"):-1]
    return None


def answers_search_dirs(call: Call) -> Optional[CommandResult]:
    if call.argv[1:] == ["-print-search-dirs"]:
        return ok("install: /usr/lib/gcc/x86_64-linux-gnu/12/\nprograms: =/usr/lib/gcc/x86_64-linux-gnu/12/\n")
    return None


# ---------------------------------------------------------------------------------------------------------------------
# A host: sources, headers, compilers, a DKMS tree, a cache


@dataclasses.dataclass
class Host:
    root: str  # the host root
    layout: DkmsLayout
    cache_dir: str
    gcc_dir: str

    def settings(self, **overrides) -> Settings:
        values = dict(host_root=self.root, cache_dir=self.cache_dir, build_timeout=900.0)
        values.update(overrides)
        return Settings(**values)

    def plan(self, settings: Settings, driver_type=DriverType.KMOD, version: str = VERSION, os_id: str = "debian"):
        facts = HostFacts(RELEASE, DEBIAN_UNAME_V, "x86_64", {"ID": os_id, "VERSION_ID": "12"}, True)
        return make_plan(facts, settings, driver_type, DriverRequirement(version, "test"))

    def add_sources(self, name: str = "falco", version: str = VERSION, bpf: bool = False) -> str:
        src = os.path.join(self.root, "usr", "src", f"{name}-{version}")
        os.makedirs(src, exist_ok=True)
        _write(os.path.join(src, "dkms.conf"), f'PACKAGE_NAME="{name}"\nPACKAGE_VERSION="{version}"\n')
        _write(os.path.join(src, "driver_config.h"), f'#define DRIVER_VERSION "{version}"\n')
        if bpf:
            _write(os.path.join(src, "bpf", "Makefile"), "all:\n\t$(MAKE) -C $(KERNELDIR) M=$$PWD\n")
        return src

    def add_headers(self, release: str = RELEASE) -> str:
        """Debian style: /lib/modules/<release>/build is an absolute link into /usr/src."""
        headers = os.path.join(self.root, "usr", "src", f"linux-headers-{release}")
        os.makedirs(headers, exist_ok=True)
        _write(os.path.join(headers, "Makefile"), "")
        modules = os.path.join(self.root, "lib", "modules", release)
        os.makedirs(modules, exist_ok=True)
        os.symlink(f"/usr/src/linux-headers-{release}", os.path.join(modules, "build"))
        return headers

    def add_compilers(self, *names: str) -> None:
        for name in names:
            _write(os.path.join(self.gcc_dir, name), "#!/bin/sh\n", mode=0o755)

    def programs(self, *names: str) -> dict:
        found = {name: f"/usr/bin/{name}" for name in names}
        found["gcc"] = os.path.join(self.gcc_dir, "gcc")
        return found

    def dkms_module_dir(self, name: str = "falco", version: str = VERSION) -> str:
        return os.path.join(self.layout.dkms_tree, name, version, RELEASE, "x86_64", "module")


def _write(path: str, content, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(content, bytes) else "w") as handle:
        handle.write(content)
    os.chmod(path, mode)


@pytest.fixture
def host(tmp_path) -> Host:
    made = Host(
        root=str(tmp_path / "host"),
        layout=DkmsLayout(dkms_tree=str(tmp_path / "dkms"), modules_root=str(tmp_path / "modules")),
        cache_dir=str(tmp_path / "cache"),
        gcc_dir=str(tmp_path / "bin"),
    )
    os.makedirs(made.root)
    made.add_compilers("gcc")
    return made


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(build.os, "geteuid", lambda: 0)


def dkms_building(host: Host, module: bytes, *, fail_first: int = 0, filename: str = "falco.ko",
                  directory: Optional[str] = None) -> Callable[[Call], CommandResult]:
    """A DKMS that fails `fail_first` times, then puts `module` where DKMS 3 would."""
    attempts = []

    def handler(call: Call) -> CommandResult:
        probed = answers_search_dirs(call)
        if probed is not None:
            return probed
        if call.argv[:2] == ["dkms", "install"]:
            attempts.append(call)
            if len(attempts) <= fail_first:
                return failed()
            _write(os.path.join(directory or host.dkms_module_dir(), filename), module)
            return ok()
        return failed(1)

    return handler


# ---------------------------------------------------------------------------------------------------------------------
# Kernel module


@pytest.mark.usefixtures("as_root")
def test_dkms_builds_for_the_real_release_and_stores_the_verified_module(host, make_module):
    module = make_module()
    host.add_sources()
    headers = host.add_headers()
    settings = host.settings(build_timeout=1234.0)
    plan = host.plan(settings)
    assert plan.fixed_kernel_release != RELEASE  # the Debian fixup rewrote it; the build must not use it
    runner = FakeRunner(host.programs("dkms", "make"), dkms_building(host, module))

    result = build_artifact(plan, settings, runner=runner, layout=host.layout)

    (install,) = runner.dkms_installs()
    wrapper = _directive_wrapper(install.argv)
    assert install.argv == [
        "dkms", "install", f"--directive=MAKE='{wrapper}'", "-m", "falco", "-v", VERSION, "-k", RELEASE,
        "--kernelsourcedir", headers, "--sourcetree", os.path.join(host.root, "usr", "src"),
    ]
    assert install.timeout == 1234.0
    assert install.wrapper == (
        f"#!/usr/bin/env bash\nexec make CC={host.gcc_dir}/gcc KERNELDIR={headers} \"$@\"\n"
    )
    assert not os.path.exists(wrapper), "the temporary build directory is removed"
    assert result == BuildResult(plan.candidates[0].cache_path, hashlib.sha256(module).hexdigest(), "local-build",
                                 None)
    with open(result.path, "rb") as handle:
        assert handle.read() == module
    entry = ArtifactCache(host.cache_dir).lookup(result.path)
    assert entry is not None and entry.verified_by == "local-build" and entry.sha256 == result.sha256


def test_sources_and_headers_under_slash_need_no_extra_dkms_options(falco_module, fs, monkeypatch):
    module = falco_module
    monkeypatch.setattr(build.os, "geteuid", lambda: 0)
    fs.create_file(f"/usr/src/falco-{VERSION}/dkms.conf")
    fs.create_dir(f"/usr/src/linux-headers-{RELEASE}")
    fs.create_symlink(f"/lib/modules/{RELEASE}/build", f"/usr/src/linux-headers-{RELEASE}")
    fs.create_file("/usr/bin/gcc")
    settings = Settings(host_root="/host", cache_dir="/root/.falco")
    plan = make_plan(HostFacts(RELEASE, DEBIAN_UNAME_V, "x86_64", {"ID": "debian"}, True), settings,
                     DriverType.KMOD, DriverRequirement(VERSION, "test"))

    def handler(call: Call) -> CommandResult:
        if call.argv[:2] == ["dkms", "install"]:
            fs.create_file(f"/var/lib/dkms/falco/{VERSION}/{RELEASE}/x86_64/module/falco.ko", contents=module)
            return ok()
        return answers_search_dirs(call) or failed(1)

    runner = FakeRunner({"gcc": "/usr/bin/gcc", "dkms": "/usr/sbin/dkms", "make": "/usr/bin/make"}, handler)
    cache = MemoryCache()
    result = build_artifact(plan, settings, runner=runner, cache=cache)

    (install,) = runner.dkms_installs()
    assert install.argv[3:] == ["-m", "falco", "-v", VERSION, "-k", RELEASE]
    assert f"KERNELDIR=/lib/modules/{RELEASE}/build" in install.wrapper
    assert result.path == f"/root/.falco/{VERSION}/x86_64/{plan.filenames[0]}"
    assert cache.stored == {result.path: (module, "local-build")}


class MemoryCache:
    """The cache's interface without its directory-fd I/O, which the fake file system cannot do."""

    def __init__(self) -> None:
        self.stored: dict = {}

    @contextlib.contextmanager
    def lock(self, path):
        yield

    def lookup(self, path):
        return None

    def store_file(self, path, source_file, *, verified_by, url=None):
        with open(source_file, "rb") as handle:
            data = handle.read()
        self.stored[path] = (data, verified_by)
        return CacheEntry(path, hashlib.sha256(data).hexdigest(), len(data), url, verified_by, "now")


@pytest.mark.usefixtures("as_root")
def test_compilers_are_tried_in_order_until_one_builds(host, make_module):
    host.add_sources()
    host.add_headers()
    host.add_compilers("gcc-10", "gcc-11", "gcc-12", "gcc-9", "gcc-ar", "gcc-ar-12", "gcc-nm-12", "gcc-ranlib")
    broken = os.path.join(host.gcc_dir, "gcc-11")

    def handler(call: Call) -> CommandResult:
        if call.argv[0] == broken:
            return failed(1, "gcc-11: fatal error: cannot execute 'cc1'")
        return dkms_handler(call)

    dkms_handler = dkms_building(host, make_module(), fail_first=2)
    runner = FakeRunner(host.programs("dkms", "make"), handler)
    settings = host.settings()
    build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)

    probed = [os.path.basename(c.argv[0]) for c in runner.calls if c.argv[1:] == ["-print-search-dirs"]]
    assert probed == ["gcc", "gcc-10", "gcc-11", "gcc-12", "gcc-9"]
    used = [c.wrapper.split("CC=")[1].split()[0] for c in runner.dkms_installs()]
    assert used == [os.path.join(host.gcc_dir, n) for n in ("gcc", "gcc-10", "gcc-12")]


@pytest.mark.usefixtures("as_root")
def test_a_sibling_that_is_the_same_compiler_as_gcc_is_not_tried_twice(host, make_module):
    host.add_sources()
    host.add_headers()
    host.add_compilers("gcc-12")
    os.remove(os.path.join(host.gcc_dir, "gcc"))
    os.symlink("gcc-12", os.path.join(host.gcc_dir, "gcc"))
    runner = FakeRunner(host.programs("dkms", "make"), dkms_building(host, make_module(), fail_first=5))
    settings = host.settings()

    with pytest.raises(NoDriverError):
        build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)
    assert len(runner.dkms_installs()) == 1


@pytest.mark.usefixtures("as_root")
@pytest.mark.parametrize("dkms3", [False, True], ids=["dkms2-build-dir", "dkms3-log-dir"])
def test_a_failed_build_reports_the_make_log_tail_of_the_last_compiler(host, dkms3):
    host.add_sources()
    host.add_headers()
    host.add_compilers("gcc-12")
    base = os.path.join(host.layout.dkms_tree, "falco", VERSION)
    make_log = os.path.join(base, RELEASE, "x86_64", "log", "make.log") if dkms3 else \
        os.path.join(base, "build", "make.log")

    def handler(call: Call) -> CommandResult:
        if call.argv[:2] == ["dkms", "install"]:
            compiler = os.path.basename(call.wrapper.split("CC=")[1].split()[0])
            _write(make_log, "".join(f"{compiler} line {i}\n" for i in range(1, 101)))
            return failed(output="Error! Bad return status for module build on kernel")
        return answers_search_dirs(call) or failed(1)

    runner = FakeRunner(host.programs("dkms", "make"), handler)
    settings = host.settings()
    with pytest.raises(NoDriverError) as caught:
        build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)

    error = caught.value
    assert error.exit_code == ExitCode.NO_DRIVER
    assert make_log in error.message
    assert f"dkms install with {host.gcc_dir}/gcc: exit status {DKMS_FAILED}" in error.tried
    assert f"dkms install with {host.gcc_dir}/gcc-12: exit status {DKMS_FAILED}" in error.tried
    log_lines = [line for line in error.tried if " line " in line]
    assert log_lines == [f"gcc-12 line {i}" for i in range(61, 101)]
    assert any(make_log in line for line in error.tried)
    assert not os.path.exists(host.plan(settings).candidates[0].cache_path)


@pytest.mark.usefixtures("as_root")
def test_without_a_make_log_the_dkms_output_is_reported(host):
    host.add_sources()
    host.add_headers()

    def handler(call: Call) -> CommandResult:
        if call.argv[:2] == ["dkms", "install"]:
            return failed(output=f"Error! Your kernel headers for kernel {RELEASE} cannot be found.\n")
        return answers_search_dirs(call) or failed(1)

    runner = FakeRunner(host.programs("dkms", "make"), handler)
    settings = host.settings()
    with pytest.raises(NoDriverError) as caught:
        build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)
    assert f"Error! Your kernel headers for kernel {RELEASE} cannot be found." in caught.value.tried


@pytest.mark.usefixtures("as_root")
def test_each_build_has_the_configured_timeout(host):
    host.add_sources()
    host.add_headers()

    def handler(call: Call) -> CommandResult:
        if call.argv[:2] == ["dkms", "install"]:
            return CommandResult(tuple(call.argv), None, "", "", timed_out=True)
        return answers_search_dirs(call) or failed(1)

    runner = FakeRunner(host.programs("dkms", "make"), handler)
    settings = host.settings(build_timeout=42.0)
    with pytest.raises(NoDriverError) as caught:
        build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)
    assert [c.timeout for c in runner.dkms_installs()] == [42.0]
    assert f"dkms install with {host.gcc_dir}/gcc: timed out after 42 s" in caught.value.tried


@pytest.mark.usefixtures("as_root")
@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd"])
def test_a_compressed_module_is_decompressed_into_the_cache(host, tmp_path, make_module, compression):
    module = make_module()
    plain = tmp_path / "falco.ko"
    plain.write_bytes(module)
    compressed = compress_file(plain, compression)
    host.add_sources()
    host.add_headers()
    updates = os.path.join(host.layout.modules_root, RELEASE, "updates", "dkms")
    runner = FakeRunner(host.programs("dkms", "make"),
                        dkms_building(host, compressed.read_bytes(), filename=compressed.name, directory=updates))
    settings = host.settings()

    result = build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)

    assert result.path.endswith(".ko")
    with open(result.path, "rb") as handle:
        assert handle.read() == module
    assert result.sha256 == hashlib.sha256(module).hexdigest()


@pytest.mark.usefixtures("as_root")
def test_modinfo_finds_a_module_installed_elsewhere(host, make_module):
    host.add_sources()
    host.add_headers()
    elsewhere = os.path.join(host.root, "odd", "place")
    dkms = dkms_building(host, make_module(), directory=elsewhere)

    def handler(call: Call) -> CommandResult:
        if call.argv[0] == "modinfo":
            assert call.argv == ["modinfo", "-k", RELEASE, "-F", "filename", "falco"]
            return ok(os.path.join(elsewhere, "falco.ko") + "\n")
        return dkms(call)

    runner = FakeRunner(host.programs("dkms", "make"), handler)
    settings = host.settings()
    result = build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)
    assert os.path.isfile(result.path)


@pytest.mark.usefixtures("as_root")
def test_dkms_success_without_a_module_is_a_clear_failure(host):
    host.add_sources()
    host.add_headers()
    runner = FakeRunner(host.programs("dkms", "make"), lambda call: answers_search_dirs(call) or ok())
    settings = host.settings()
    with pytest.raises(NoDriverError) as caught:
        build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)
    assert any("no falco.ko was found" in line for line in caught.value.tried)


@pytest.mark.usefixtures("as_root")
@pytest.mark.parametrize(
    ("built", "problem"),
    [
        (dict(version="8.0.0+driver"), f"driver version is '8.0.0+driver', expected '{VERSION}'"),
        (dict(name="scap"), "modinfo name is 'scap', expected 'falco'"),
        (dict(release="6.1.192-2-amd64"), f"vermagic release is '6.1.192-2-amd64', expected '{RELEASE}'"),
    ],
)
def test_a_build_that_is_not_what_was_asked_for_is_refused_and_not_cached(host, make_module, built, problem):
    host.add_sources()
    host.add_headers()
    runner = FakeRunner(host.programs("dkms", "make"), dkms_building(host, make_module(**built)))
    settings = host.settings()
    plan = host.plan(settings)
    with pytest.raises(VerificationError) as caught:
        build_artifact(plan, settings, runner=runner, layout=host.layout)
    assert problem in caught.value.tried
    assert caught.value.exit_code == ExitCode.VERIFICATION
    assert not os.path.exists(plan.candidates[0].cache_path)
    assert ArtifactCache(host.cache_dir).lookup(plan.candidates[0].cache_path) is None


@pytest.mark.usefixtures("as_root")
def test_a_dashed_driver_name_is_checked_against_the_kernel_module_name(host, make_module):
    host.add_sources(name="my-driver")
    host.add_headers()
    runner = FakeRunner(host.programs("dkms", "make"),
                        dkms_building(host, make_module(name="my_driver"), filename="my-driver.ko",
                                      directory=host.dkms_module_dir("my-driver")))
    settings = host.settings(driver_name="my-driver")
    result = build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)
    assert os.path.basename(result.path).startswith("my-driver_")
    assert runner.dkms_installs()[0].argv[3:5] == ["-m", "my-driver"]


def test_building_the_module_needs_root(host, monkeypatch):
    monkeypatch.setattr(build.os, "geteuid", lambda: 1000)
    host.add_sources()
    host.add_headers()
    runner = FakeRunner(host.programs("dkms", "make"))
    settings = host.settings()
    with pytest.raises(LoaderError) as caught:
        build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)
    assert caught.value.exit_code == ExitCode.RUNTIME
    assert "root" in caught.value.message and "root" in caught.value.hint
    assert runner.calls == []


@pytest.mark.usefixtures("as_root")
def test_a_rerun_reuses_the_cached_build(host, make_module):
    host.add_sources()
    host.add_headers()
    settings = host.settings()
    plan = host.plan(settings)
    first = build_artifact(plan, settings, runner=FakeRunner(host.programs("dkms", "make"),
                                                             dkms_building(host, make_module())),
                           layout=host.layout)
    untouched = FakeRunner({})
    again = build_artifact(plan, settings, runner=untouched, layout=host.layout)
    assert untouched.calls == []
    assert (again.path, again.sha256, again.verified_by) == (first.path, first.sha256, "local-build")


@pytest.mark.usefixtures("as_root")
def test_missing_sources_say_where_they_were_expected_and_how_to_get_them(host):
    host.add_headers()
    runner = FakeRunner(host.programs("dkms", "make"))
    settings = host.settings()
    with pytest.raises(NoDriverError) as caught:
        build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)
    error = caught.value
    assert error.exit_code == ExitCode.NO_DRIVER
    assert f"/usr/src/falco-{VERSION}" in error.message
    assert f"looked for /usr/src/falco-{VERSION}" in error.tried
    assert f"looked for {host.root}/usr/src/falco-{VERSION}" in error.tried
    assert "falco package" in error.hint and "/usr/src" in error.hint and "dkms" in error.hint
    assert runner.dkms_installs() == []


@pytest.mark.usefixtures("as_root")
@pytest.mark.parametrize(
    ("os_id", "package"),
    [("debian", f"linux-headers-{RELEASE}"), ("ubuntu", f"linux-headers-{RELEASE}"),
     ("fedora", f"kernel-devel-{RELEASE}"), ("cos", "modern_ebpf")],
)
def test_missing_headers_name_the_package_for_the_real_release(host, os_id, package):
    host.add_sources()
    runner = FakeRunner(host.programs("dkms", "make"))
    settings = host.settings()
    plan = host.plan(settings, os_id=os_id)
    with pytest.raises(NoDriverError) as caught:
        build_artifact(plan, settings, runner=runner, layout=host.layout)
    error = caught.value
    assert error.exit_code == ExitCode.NO_DRIVER
    assert RELEASE in error.message
    assert package in error.hint
    assert f"looked for {host.root}/lib/modules/{RELEASE}/build" in error.tried
    assert runner.dkms_installs() == []


@pytest.mark.usefixtures("as_root")
@pytest.mark.parametrize("absent", ["dkms", "make"])
def test_missing_build_tools_are_named(host, absent):
    host.add_sources()
    host.add_headers()
    present = [tool for tool in ("dkms", "make") if tool != absent]
    runner = FakeRunner(host.programs(*present))
    settings = host.settings()
    with pytest.raises(NoDriverError) as caught:
        build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)
    assert absent in caught.value.message
    assert runner.dkms_installs() == []


@pytest.mark.usefixtures("as_root")
def test_no_working_compiler_is_a_clear_failure(host):
    host.add_sources()
    host.add_headers()
    runner = FakeRunner(host.programs("dkms", "make"), lambda call: failed(1))
    settings = host.settings()
    with pytest.raises(NoDriverError) as caught:
        build_artifact(host.plan(settings), settings, runner=runner, layout=host.layout)
    assert "gcc" in caught.value.message
    assert runner.dkms_installs() == []


def test_modern_ebpf_is_not_built(host):
    settings = host.settings()
    with pytest.raises(UsageError):
        build_artifact(host.plan(settings, DriverType.MODERN_EBPF), settings, runner=FakeRunner({}),
                       layout=host.layout)


# ---------------------------------------------------------------------------------------------------------------------
# Legacy eBPF probe


def make_building_probe(probe: bytes, seen: dict) -> Callable[[Call], CommandResult]:
    def handler(call: Call) -> CommandResult:
        if call.argv[0] != "make":
            return failed(1)
        bpf_dir = call.argv[2]
        seen["config_beside_bpf"] = os.path.isfile(os.path.join(bpf_dir, "..", "driver_config.h"))
        _write(os.path.join(bpf_dir, "probe.o"), probe)
        return ok("  CLANG-bpf probe.o\n")

    return handler


def test_the_probe_is_built_with_make_in_a_copy_of_the_whole_tree(host, make_probe):
    probe = make_probe()
    sources = host.add_sources(bpf=True)
    headers = host.add_headers()
    seen: dict = {}
    runner = FakeRunner(host.programs("make", "clang", "llc"), make_building_probe(probe, seen))
    settings = host.settings(build_timeout=300.0)
    plan = host.plan(settings, DriverType.EBPF)

    result = build_artifact(plan, settings, runner=runner, layout=host.layout)

    (make,) = runner.calls
    assert make.argv[0:2] == ["make", "-C"]
    assert make.argv[2].endswith("/src/bpf") and not make.argv[2].startswith(sources)
    assert make.argv[3:] == [f"KERNELDIR={headers}"]
    assert make.timeout == 300.0
    assert seen["config_beside_bpf"], "bpf/ needs ../driver_config.h: the whole tree is copied"
    assert not os.path.exists(make.argv[2]), "the copy is removed afterwards"
    assert not os.path.exists(os.path.join(sources, "bpf", "probe.o")), "the sources are never built in place"
    assert result.path == plan.candidates[0].cache_path and result.path.endswith(".o")
    with open(result.path, "rb") as handle:
        assert handle.read() == probe


def test_the_probe_build_needs_clang_and_llc(host):
    host.add_sources(bpf=True)
    host.add_headers()
    runner = FakeRunner(host.programs("make"))
    settings = host.settings()
    with pytest.raises(NoDriverError) as caught:
        build_artifact(host.plan(settings, DriverType.EBPF), settings, runner=runner, layout=host.layout)
    assert "clang" in caught.value.message and "llc" in caught.value.message
    assert "clang" in caught.value.hint
    assert runner.calls == []


def test_sources_without_bpf_cannot_build_the_probe(host):
    host.add_sources(bpf=False)
    host.add_headers()
    settings = host.settings()
    with pytest.raises(NoDriverError) as caught:
        build_artifact(host.plan(settings, DriverType.EBPF), settings,
                       runner=FakeRunner(host.programs("make", "clang", "llc")), layout=host.layout)
    assert "bpf/" in caught.value.message


def test_a_failed_probe_build_reports_the_tail_of_its_output(host):
    host.add_sources(bpf=True)
    host.add_headers()
    output = "".join(f"make line {i}\n" for i in range(1, 61)) + "error: use of undeclared identifier\n"
    runner = FakeRunner(host.programs("make", "clang", "llc"), lambda call: failed(2, output))
    settings = host.settings()
    with pytest.raises(NoDriverError) as caught:
        build_artifact(host.plan(settings, DriverType.EBPF), settings, runner=runner, layout=host.layout)
    tried = caught.value.tried
    assert "error: use of undeclared identifier" in tried
    assert "make line 22" in tried and "make line 21" not in tried
    assert "exit status 2" in caught.value.message


def test_a_probe_for_another_kernel_is_refused(host, make_probe):
    host.add_sources(bpf=True)
    host.add_headers()
    runner = FakeRunner(host.programs("make", "clang", "llc"),
                        make_building_probe(make_probe(release="6.1.192-2-amd64"), {}))
    settings = host.settings()
    plan = host.plan(settings, DriverType.EBPF)
    with pytest.raises(VerificationError) as caught:
        build_artifact(plan, settings, runner=runner, layout=host.layout)
    assert f"kernel_version is '6.1.192-2-amd64', expected '{RELEASE}'" in caught.value.tried
    assert not os.path.exists(plan.candidates[0].cache_path)


# ---------------------------------------------------------------------------------------------------------------------
# DKMS cleanup


@pytest.mark.parametrize(
    ("output", "versions"),
    [
        ("falco, 6.0.1+driver, 5.15.0-76-generic, x86_64: installed\n", ("6.0.1+driver",)),
        ("falco/6.0.1+driver, 5.15.0-76-generic, x86_64: installed\n", ("6.0.1+driver",)),
        ("falco/4.0.0+driver: added\n", ("4.0.0+driver",)),
        (
            "falco/6.0.1+driver, 5.15.0-76-generic, x86_64: installed\n"
            "falco/6.0.1+driver, 5.15.0-78-generic, x86_64: installed (WARNING! Diff between built and installed)\n"
            "falco/4.0.0+driver: added\n",
            ("6.0.1+driver", "4.0.0+driver"),
        ),
        ("falco, 2.0.0+driver, 4.19.0-24-amd64, x86_64: built\nfalco, 3.0.1+driver: added\n",
         ("2.0.0+driver", "3.0.1+driver")),
        ("Warning: something unrelated\nfalcon/1.0: added\nscap/0.1.1: added\n", ()),
        ("", ()),
    ],
)
def test_dkms_status_is_parsed_in_both_dkms_formats(output, versions):
    assert parse_dkms_status(output, "falco") == versions


def test_every_dkms_version_is_removed_and_failures_are_reported():
    status = "falco/8.0.0+driver, 6.1.0-56-amd64, x86_64: installed\nfalco/7.0.0+driver: added\n"

    def handler(call: Call) -> CommandResult:
        if call.argv[1] == "status":
            return ok(status)
        return failed(3) if call.argv[5] == "7.0.0+driver" else ok()

    runner = FakeRunner({"dkms": "/usr/sbin/dkms"}, handler)
    removal = remove_dkms_state("falco", runner=runner)
    assert [c.argv for c in runner.calls] == [
        ["dkms", "status", "-m", "falco"],
        ["dkms", "remove", "-m", "falco", "-v", "8.0.0+driver", "--all"],
        ["dkms", "remove", "-m", "falco", "-v", "7.0.0+driver", "--all"],
    ]
    assert removal.removed == ("8.0.0+driver",)
    assert removal.failed == ("7.0.0+driver",)


def test_without_dkms_there_is_nothing_to_remove():
    runner = FakeRunner({})
    removal = remove_dkms_state("falco", runner=runner)
    assert runner.calls == [] and removal.removed == () and removal.failed == ()


def test_a_failing_dkms_status_removes_nothing():
    runner = FakeRunner({"dkms": "/usr/sbin/dkms"}, lambda call: failed(1, "falco/1.0.0: added\n"))
    removal = remove_dkms_state("falco", runner=runner)
    assert [c.argv[1] for c in runner.calls] == ["status"]
    assert removal.removed == ()


# ---------------------------------------------------------------------------------------------------------------------
# The real command runner


def test_the_runner_captures_output_status_env_and_cwd(tmp_path):
    script = "import os, sys; print(os.environ['BUILD_PROBE'], os.getcwd()); print('oops', file=sys.stderr); sys.exit(3)"
    result = CommandRunner().run([sys.executable, "-c", script], timeout=60, env={"BUILD_PROBE": "yes"},
                                 cwd=str(tmp_path))
    assert result.returncode == 3 and not result.ok and not result.timed_out
    assert result.stdout == f"yes {tmp_path}\n"
    assert result.stderr == "oops\n"


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pid_file}; wait"
    result = CommandRunner().run(["sh", "-c", script], timeout=1)
    assert result.timed_out and not result.ok
    assert result.describe(1) == "timed out after 1 s"
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        _wait_gone(child)


def _wait_gone(pid: int) -> None:
    """Signal 0 to the grandchild; reap it if it is ours. It was killed, so this raises ProcessLookupError once the
    kernel has torn it down (a zombie of init still exists briefly, so poll until it is gone)."""
    for _ in range(200):
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().split(") ", 1)[1].startswith("Z"):
                raise ProcessLookupError(pid)
        subprocess.run(["sleep", "0.05"], check=True)


def test_a_missing_program_is_a_result_not_an_exception():
    result = CommandRunner().run(["/nonexistent/dkms", "status"], timeout=5)
    assert result.returncode is None and not result.ok
    assert result.describe(5).startswith("could not start")


# ---------------------------------------------------------------------------------------------------------------------
# The `build` command


DEBIAN = "ID=debian\nVERSION_ID=\"12\"\n"


@pytest.fixture
def recorded_builds(monkeypatch, tmp_path):
    """build_artifact replaced by a recorder that 'builds' at the plan's first cache path."""
    from driver_loader.cli.commands import build as build_command

    class Calls(list):
        def sha256(self, plan):
            with open(plan.candidates[0].cache_path, "rb") as built:
                return hashlib.sha256(built.read()).hexdigest()

    calls = Calls()

    def fake_build(plan, settings, *, cache, **_kwargs):
        calls.append((plan, settings))
        made = tmp_path / "made" / str(len(calls))
        made.mkdir(parents=True)
        if plan.driver_type is DriverType.KMOD:
            built = make_kmod(made, version=plan.driver_version, vermagic=f"{RELEASE} SMP preempt mod_unload ",
                              modversions=False)
        else:
            built = make_bpf_probe(made, kernel_version=RELEASE, probe_version=plan.driver_version)
        entry = cache.store_file(plan.candidates[0].cache_path, str(built), verified_by="local-build")
        return BuildResult(entry.path, entry.sha256, "local-build", "/var/lib/dkms/make.log")

    monkeypatch.setattr(build_command, "build_artifact", fake_build)
    return calls


def run_cli(capsys, root, *args):
    from driver_loader.cli.main import main

    argv = ["build", "--host-root", root, "--kernel-release", RELEASE, "--kernel-version", DEBIAN_UNAME_V,
            "--arch", "amd64", "--driver-version", VERSION, *args]
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_build_prints_the_artifact_path(capsys, host_root, recorded_builds, tmp_path):
    code, out, _ = run_cli(capsys, host_root({"etc/os-release": DEBIAN}), "--cache-dir", str(tmp_path / "c"),
                           "--build-timeout", "60")
    assert code == 0
    ((plan, settings),) = recorded_builds
    assert out == plan.candidates[0].cache_path + "\n"
    assert plan.driver_type is DriverType.KMOD  # the default list's modern_ebpf has nothing to build
    assert plan.kernel_release == RELEASE
    assert settings.build_timeout == 60.0


def test_build_json_output(capsys, host_root, recorded_builds, tmp_path):
    code, out, _ = run_cli(capsys, host_root({"etc/os-release": DEBIAN}), "--type", "modern_ebpf,ebpf",
                           "--output", "json", "--cache-dir", str(tmp_path / "c"))
    assert code == 0
    ((plan, _settings),) = recorded_builds
    assert json.loads(out) == {
        "driver_type": "ebpf", "driver_name": "falco", "driver_version": VERSION, "kernel_release": RELEASE,
        "path": plan.candidates[0].cache_path, "sha256": recorded_builds.sha256(plan), "verified_by": "local-build",
        "log_path": "/var/lib/dkms/make.log",
    }


def test_build_refuses_modern_ebpf_only(capsys, host_root, recorded_builds):
    code, _, err = run_cli(capsys, host_root({"etc/os-release": DEBIAN}), "--type", "modern_ebpf")
    assert code == ExitCode.USAGE
    assert "modern_ebpf" in err
    assert recorded_builds == []


def test_build_without_sources_exits_no_driver(capsys, host_root, tmp_path):
    code, out, err = run_cli(capsys, host_root({"etc/os-release": DEBIAN}), "--type", "ebpf",
                             "--cache-dir", str(tmp_path / "c"))
    assert code == ExitCode.NO_DRIVER
    assert out == ""
    assert f"/usr/src/falco-{VERSION}" in err
