import errno
import os
import stat

import pytest
from fake_kernel import FakeKernel

from driver_loader.core.errors import ExitCode, LoaderError, LoadError
from driver_loader.kernel.modules import (
    KernelModules,
    Syscalls,
    depmod_argv,
    load_error,
    load_module,
    persist_module,
    remove_persisted_module,
    unload_module,
)
from driver_loader.system.runner import CommandResult
from driver_loader.system.syscalls import SYSCALLS, syscall_number


def Result(returncode=0, output="", timed_out=False):
    return CommandResult((), None if timed_out else returncode, output, "", timed_out=timed_out)


class Runner:
    def __init__(self, returncode=0, timed_out=False):
        self.argvs = []
        self.timeouts = []
        self.returncode = returncode
        self.timed_out = timed_out

    def which(self, program):
        return f"/usr/sbin/{program}"

    def run(self, argv, *, timeout, env=None, cwd=None):
        self.argvs.append(list(argv))
        self.timeouts.append(timeout)
        return Result(self.returncode, "depmod: ERROR: boom" if self.returncode else "", timed_out=self.timed_out)


@pytest.fixture
def kernel(tmp_path):
    return FakeKernel(tmp_path)


def open_module(tmp_path, content=b"\x00name=falco\x00version=8.0.0+driver\x00"):
    path = tmp_path / "falco.ko"
    path.write_bytes(content)
    return os.open(path, os.O_RDONLY)


# -- module state ---------------------------------------------------------------------------------------------------


def test_loaded_reads_the_module_state_from_sysfs(kernel):
    kernel.add_module("falco", "8.0.0+driver", refcnt=2, holders=["other_mod"], srcversion="ABC")
    module = kernel.modules().loaded("falco")
    assert module.version == "8.0.0+driver"
    assert module.refcnt == 2
    assert module.holders == ("other_mod",)
    assert module.srcversion == "ABC"
    assert module.initstate == "live"
    assert kernel.modules().loaded("scap") is None


def test_module_support_is_proc_modules(tmp_path):
    assert FakeKernel(tmp_path / "a").modules().modules_supported()
    assert not FakeKernel(tmp_path / "b", modules_supported=False).modules().modules_supported()


def test_device_users_names_processes_holding_the_device_open(kernel):
    fd_dir = kernel.proc_root / "4242" / "fd"
    fd_dir.mkdir(parents=True)
    (kernel.proc_root / "4242" / "comm").write_text("falco\n")
    os.symlink(str(kernel.dev_root / "falco3"), fd_dir / "7")
    other = kernel.proc_root / "77" / "fd"
    other.mkdir(parents=True)
    os.symlink(str(kernel.dev_root / "falcoxyz"), other / "1")
    assert kernel.modules().device_users("falco") == ["falco (pid 4242)"]


# -- unloading ------------------------------------------------------------------------------------------------------


def test_unload_of_a_module_that_is_not_loaded_does_nothing(kernel):
    assert unload_module(kernel.modules(), "falco", retries=3) is None
    assert kernel.calls == []


def test_unload_uses_delete_module_non_blocking(kernel):
    kernel.add_module("falco", "7.0.0+driver")
    unloaded = unload_module(kernel.modules(), "falco", retries=3)
    assert unloaded.version == "7.0.0+driver"
    assert kernel.calls == [("delete_module", "falco", os.O_NONBLOCK)]
    assert kernel.module_version("falco") is None


def test_unload_retries_with_growing_delays_while_busy(kernel):
    kernel.add_module("falco", "7.0.0+driver", refcnt=1)
    kernel.delete_errors = [errno.EAGAIN, errno.EBUSY]
    unload_module(kernel.modules(), "falco", retries=3)
    assert kernel.syscall_names() == ["delete_module"] * 3
    assert kernel.sleeps == [0.5, 1.0]
    assert kernel.module_version("falco") is None


def test_a_module_that_stays_busy_is_left_loaded_and_its_holders_named(kernel):
    kernel.add_module("falco", "7.0.0+driver", refcnt=3, holders=["falco_helper"])
    kernel.always_busy = True
    with pytest.raises(LoadError) as caught:
        unload_module(kernel.modules(), "falco", retries=2)
    error = caught.value
    assert error.exit_code == ExitCode.LOAD
    assert "falco_helper" in error.message and "refcnt 3" in error.message
    assert kernel.syscall_names() == ["delete_module"] * 3
    assert kernel.sleeps == [0.5, 1.0]
    assert kernel.module_version("falco") == "7.0.0+driver"


def test_busy_error_names_the_processes_using_the_device(kernel):
    kernel.add_module("falco", "7.0.0+driver", refcnt=1)
    fd_dir = kernel.proc_root / "99" / "fd"
    fd_dir.mkdir(parents=True)
    (kernel.proc_root / "99" / "comm").write_text("falco\n")
    os.symlink(str(kernel.dev_root / "falco0"), fd_dir / "3")
    kernel.always_busy = True
    with pytest.raises(LoadError) as caught:
        unload_module(kernel.modules(), "falco", retries=0)
    assert any("falco (pid 99)" in item for item in caught.value.tried)


def test_unload_treats_a_module_gone_meanwhile_as_unloaded(kernel):
    kernel.add_module("falco", "7.0.0+driver")
    kernel.delete_errors = [errno.ENOENT]
    assert unload_module(kernel.modules(), "falco", retries=1).version == "7.0.0+driver"
    assert kernel.syscall_names() == ["delete_module"]


def test_unload_without_permission_fails_with_a_hint(kernel):
    kernel.add_module("falco", "7.0.0+driver")
    kernel.delete_errors = [errno.EPERM]
    with pytest.raises(LoadError) as caught:
        unload_module(kernel.modules(), "falco", retries=5)
    assert "CAP_SYS_MODULE" in caught.value.hint
    assert kernel.syscall_names() == ["delete_module"]


# -- loading --------------------------------------------------------------------------------------------------------


def test_load_passes_the_given_descriptor_and_confirms_the_version(kernel, tmp_path):
    fd = open_module(tmp_path)
    try:
        assert load_module(kernel.modules(), fd, name="falco", version="8.0.0+driver") == "finit_module"
    finally:
        os.close(fd)
    assert kernel.calls[0][:3] == ("finit_module", fd, 0)
    assert kernel.module_version("falco") == "8.0.0+driver"


def test_a_compressed_module_is_loaded_with_the_compressed_file_flag(kernel, tmp_path):
    fd = open_module(tmp_path)
    try:
        load_module(kernel.modules(), fd, name="falco", version="8.0.0+driver", compressed=True)
    finally:
        os.close(fd)
    assert kernel.calls[0][2] == 4


def test_load_fails_when_sysfs_shows_another_version(kernel, tmp_path):
    kernel.loaded_version_override = "9.9.9+driver"
    fd = open_module(tmp_path)
    try:
        with pytest.raises(LoadError, match="9.9.9"):
            load_module(kernel.modules(), fd, name="falco", version="8.0.0+driver")
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOEXEC, "Invalid module format"),
        (errno.EEXIST, "already loaded"),
        (errno.EKEYREJECTED, "signature"),
        (errno.EPERM, "does not permit"),
        (errno.ENOENT, "Unknown symbol"),
        (errno.ENOKEY, "key"),
        (errno.EBUSY, "busy"),
        (errno.EACCES, "denied"),
    ],
)
def test_load_errors_are_explained(kernel, tmp_path, code, expected):
    kernel.finit_errors = [code]
    fd = open_module(tmp_path)
    try:
        with pytest.raises(LoadError) as caught:
            load_module(kernel.modules(), fd, name="falco", version="8.0.0+driver")
    finally:
        os.close(fd)
    assert expected in caught.value.message
    assert caught.value.exit_code == ExitCode.LOAD
    assert caught.value.hint
    assert errno.errorcode[code] in caught.value.tried[0]


def test_invalid_format_names_the_likely_cause_and_the_kernel_log(kernel, tmp_path):
    kernel.finit_errors = [errno.ENOEXEC]
    kernel.kernel_log_on_failure = "falco: disagrees about version of symbol module_layout"
    fd = open_module(tmp_path)
    try:
        with pytest.raises(LoadError) as caught:
            load_module(kernel.modules(), fd, name="falco", version="8.0.0+driver",
                        likely_causes=["module is built for kernel 6.1.0-1, the running kernel is 6.1.0-2"])
    finally:
        os.close(fd)
    error = caught.value
    assert "likely cause: module is built for kernel 6.1.0-1" in error.message
    assert "kernel: falco: disagrees about version of symbol module_layout" in error.tried


def test_unknown_symbol_without_kernel_log_points_at_dmesg():
    error = load_error(errno.ENOENT, "falco")
    assert "dmesg" in error.hint


def test_eexist_for_the_same_version_loaded_meanwhile_is_success(kernel, tmp_path):
    kernel.add_module("falco", "8.0.0+driver")
    kernel.finit_errors = [errno.EEXIST]
    fd = open_module(tmp_path)
    try:
        assert load_module(kernel.modules(), fd, name="falco", version="8.0.0+driver") == "already loaded"
    finally:
        os.close(fd)


def test_eexist_for_another_version_names_it(kernel, tmp_path):
    kernel.add_module("falco", "7.0.0+driver")
    kernel.finit_errors = [errno.EEXIST]
    fd = open_module(tmp_path)
    try:
        with pytest.raises(LoadError, match=r"already loaded \(version 7.0.0\+driver\)"):
            load_module(kernel.modules(), fd, name="falco", version="8.0.0+driver")
    finally:
        os.close(fd)


class InsmodKernel(KernelModules):
    def __init__(self, fake, status):
        super().__init__(sys_root=str(fake.sys_root), proc_root=str(fake.proc_root), dev_root=str(fake.dev_root),
                         syscalls=fake)
        self.fake = fake
        self.status = status
        self.insmod_fds = []

    def insmod(self, fd):
        self.insmod_fds.append(fd)
        if self.status == 0:
            self.fake.add_module("falco", "8.0.0+driver")
        return self.status, "insmod: ERROR: could not insert module: Invalid module format" if self.status else ""


def test_insmod_is_the_fallback_only_without_the_syscall(kernel, tmp_path):
    kernel.finit_errors = [errno.ENOSYS]
    modules = InsmodKernel(kernel, 0)
    fd = open_module(tmp_path)
    try:
        assert load_module(modules, fd, name="falco", version="8.0.0+driver") == "insmod"
    finally:
        os.close(fd)
    assert modules.insmod_fds == [fd]


def test_insmod_failure_is_a_load_error(kernel, tmp_path):
    kernel.finit_errors = [errno.ENOSYS]
    fd = open_module(tmp_path)
    try:
        with pytest.raises(LoadError, match="Invalid module format"):
            load_module(InsmodKernel(kernel, 1), fd, name="falco", version="8.0.0+driver")
    finally:
        os.close(fd)


def test_other_errors_do_not_fall_back_to_insmod(kernel, tmp_path):
    kernel.finit_errors = [errno.EPERM]
    modules = InsmodKernel(kernel, 0)
    fd = open_module(tmp_path)
    try:
        with pytest.raises(LoadError):
            load_module(modules, fd, name="falco", version="8.0.0+driver")
    finally:
        os.close(fd)
    assert modules.insmod_fds == []


# -- the real syscall layer -----------------------------------------------------------------------------------------


def test_syscall_numbers_per_architecture():
    assert SYSCALLS["x86_64"] == {"finit_module": 313, "delete_module": 176, "bpf": 321}
    assert SYSCALLS["aarch64"] == {"finit_module": 273, "delete_module": 106, "bpf": 280}
    assert Syscalls(arch="amd64").numbers == SYSCALLS["x86_64"]
    assert syscall_number("bpf", "arm64") == 280
    assert syscall_number("bpf", "riscv64") is None


def test_an_unknown_architecture_reports_enosys_without_a_syscall():
    with pytest.raises(OSError) as caught:
        Syscalls(arch="riscv64").delete_module("falco")
    assert caught.value.errno == errno.ENOSYS


def test_a_c_library_that_cannot_be_opened_reports_enosys(monkeypatch):
    # dlopen's OSError has no errno; load_module and unload_module act on the errno (ENOSYS: fall back to insmod).
    import ctypes

    def no_libc(*args, **kwargs):
        raise OSError("libc.so: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    with pytest.raises(OSError) as caught:
        Syscalls(arch="x86_64").finit_module(0)
    assert caught.value.errno == errno.ENOSYS
    assert "cannot open shared object file" in caught.value.strerror


def test_the_real_delete_module_syscall_reports_an_errno():
    if os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip("syscall numbers are known for x86_64 and aarch64 only")
    with pytest.raises(OSError) as caught:
        Syscalls().delete_module("no_such_module_for_tests")
    # ENOSYS without module support, ENOENT when the kernel has modules, EPERM without CAP_SYS_MODULE.
    assert caught.value.errno in (errno.ENOSYS, errno.ENOENT, errno.EPERM)


# -- persisting -----------------------------------------------------------------------------------------------------


def test_persist_installs_the_module_and_runs_depmod(tmp_path):
    runner = Runner()
    old = os.umask(0o077)
    try:
        path = persist_module(b"\x7fELF module", name="falco", release="6.1.0-56-amd64", host_root=str(tmp_path),
                              runner=runner)
    finally:
        os.umask(old)
    assert path == str(tmp_path / "lib/modules/6.1.0-56-amd64/extra/falco.ko")
    assert (tmp_path / "lib/modules/6.1.0-56-amd64/extra/falco.ko").read_bytes() == b"\x7fELF module"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert runner.argvs == [["depmod", "-b", str(tmp_path), "-a", "6.1.0-56-amd64"]]
    assert [p.name for p in (tmp_path / "lib/modules/6.1.0-56-amd64/extra").iterdir()] == ["falco.ko"]


@pytest.mark.parametrize(
    ("host_root", "argv"),
    [
        ("/", ["depmod", "-a", "6.1.0"]),
        ("//", ["depmod", "-a", "6.1.0"]),
        ("/host", ["depmod", "-b", "/host", "-a", "6.1.0"]),
    ],
)
def test_depmod_targets_the_host_modules(host_root, argv):
    assert depmod_argv("6.1.0", host_root) == argv


def test_a_failing_depmod_is_reported(tmp_path):
    with pytest.raises(LoaderError, match="depmod failed"):
        persist_module(b"x", name="falco", release="6.1.0", host_root=str(tmp_path), runner=Runner(returncode=1))


def test_depmod_gets_the_tool_timeout_and_a_timeout_names_the_knob(tmp_path):
    runner = Runner(timed_out=True)
    with pytest.raises(LoaderError) as caught:
        persist_module(b"x", name="falco", release="6.1.0", host_root=str(tmp_path), runner=runner, timeout=1234.0)
    assert runner.timeouts == [1234.0]
    assert "timed out after 1234 s" in caught.value.message
    assert "--tool-timeout" in caught.value.hint and "FALCOCTL_DRIVER_TOOL_TIMEOUT" in caught.value.hint


def test_depmod_default_timeout_fits_a_slow_machine(tmp_path):
    runner = Runner()
    persist_module(b"x", name="falco", release="6.1.0", host_root=str(tmp_path), runner=runner)
    assert runner.timeouts[0] >= 600


def test_remove_persisted_module_is_idempotent(tmp_path):
    runner = Runner()
    persist_module(b"x", name="falco", release="6.1.0", host_root=str(tmp_path), runner=runner)
    removed = remove_persisted_module(name="falco", release="6.1.0", host_root=str(tmp_path), runner=runner)
    assert removed == str(tmp_path / "lib/modules/6.1.0/extra/falco.ko")
    assert not os.path.exists(removed)
    assert remove_persisted_module(name="falco", release="6.1.0", host_root=str(tmp_path), runner=runner) is None
    assert len(runner.argvs) == 2
