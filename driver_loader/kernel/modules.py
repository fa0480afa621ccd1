"""The kernel edge for modules: finit_module(2) and delete_module(2) through ctypes, and module state read from
/sys and /proc. Nothing else in the loader asks the running kernel about modules or changes them.

`KernelModules` is the seam: its roots (/sys, /proc, /dev) are configurable and its syscalls sit in one small
object, so the unloading, loading and error-explaining logic below runs in tests against temporary trees and a
fake syscall layer, with no kernel involved.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import platform
import time
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

from driver_loader.core.errors import LoaderError, LoadError
from driver_loader.core.settings import DEFAULT_TOOL_TIMEOUT
from driver_loader.output.log import get_logger
from driver_loader.system.syscalls import syscall_numbers

if TYPE_CHECKING:
    import ctypes  # imported where a syscall is made, not at start-up

log = get_logger(__name__)

# finit_module flag (Linux 5.17+): the file is compressed and the kernel decompresses it.
MODULE_INIT_COMPRESSED_FILE = 4
BUSY_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY})
UNLOAD_FIRST_DELAY = 0.5
UNLOAD_MAX_DELAY = 5.0
_SMALL_READ = 4096
_KMSG_MAX_RECORDS = 2000
_INSMOD_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class LoadedModule:
    """What /sys/module/<name> tells about a loaded module."""

    name: str
    version: Optional[str]
    srcversion: Optional[str]
    refcnt: Optional[int]
    holders: Tuple[str, ...]
    initstate: Optional[str]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"holders": list(self.holders)}

    def fits(self, compatible) -> bool:
        """Live, with a version inside `compatible` (a versions.CompatibleRange): safe to keep as it is."""
        return bool(self.version) and self.initstate in (None, "live") and compatible.contains(self.version)


class Syscalls:
    """The two module syscalls, raising OSError(errno) like the os module does."""

    def __init__(self, arch: Optional[str] = None) -> None:
        self.arch = arch or platform.machine()
        self.numbers = syscall_numbers(self.arch)
        self._libc: Optional[ctypes.CDLL] = None

    def finit_module(self, fd: int, flags: int = 0) -> None:
        import ctypes

        self._call("finit_module", ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(flags))

    def delete_module(self, name: str, flags: int = os.O_NONBLOCK) -> None:
        import ctypes

        self._call("delete_module", ctypes.c_char_p(name.encode()), ctypes.c_uint(flags))

    def _call(self, syscall: str, *args) -> None:
        import ctypes

        number = self.numbers.get(syscall)
        if number is None:
            raise OSError(errno.ENOSYS, f"{syscall}: no syscall number known for {self.arch}")
        if self._libc is None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
            except OSError as exc:  # dlopen's failure has no errno; callers act on the errno
                raise OSError(errno.ENOSYS, f"{syscall}: cannot open the C library: {exc}") from None
            libc.syscall.restype = ctypes.c_long
            self._libc = libc
        if self._libc.syscall(ctypes.c_long(number), *args) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))


class KernelModules:
    """Module state and module syscalls, with every path under configurable roots."""

    def __init__(
        self,
        *,
        sys_root: str = "/sys",
        proc_root: str = "/proc",
        dev_root: str = "/dev",
        syscalls: Optional[Syscalls] = None,
        sleep: Callable[[float], None] = time.sleep,
        euid: Callable[[], int] = os.geteuid,
    ) -> None:
        self.sys_root = sys_root
        self.proc_root = proc_root
        self.dev_root = dev_root
        self.syscalls = syscalls or Syscalls()
        self.sleep = sleep
        self._euid = euid

    # -- state ------------------------------------------------------------------------------------------------------

    def modules_supported(self) -> bool:
        """CONFIG_MODULES: the kernel lists its modules in /proc/modules."""
        return os.path.exists(os.path.join(self.proc_root, "modules"))

    def is_root(self) -> bool:
        return self._euid() == 0

    def loaded(self, name: str) -> Optional[LoadedModule]:
        directory = os.path.join(self.sys_root, "module", name)
        if not os.path.isdir(directory):
            return None
        refcnt = self._read(directory, "refcnt")
        try:
            holders = tuple(sorted(os.listdir(os.path.join(directory, "holders"))))
        except OSError:
            holders = ()
        return LoadedModule(
            name=name,
            version=self._read(directory, "version"),
            srcversion=self._read(directory, "srcversion"),
            refcnt=int(refcnt) if refcnt and refcnt.isdigit() else None,
            holders=holders,
            initstate=self._read(directory, "initstate"),
        )

    def device_users(self, name: str) -> List[str]:
        """`comm (pid N)` of every process holding one of the module's devices (/dev/<name>N) open."""
        prefix = os.path.join(self.dev_root, name)
        users = []
        try:
            pids = sorted((entry for entry in os.listdir(self.proc_root) if entry.isdigit()), key=int)
        except OSError:
            return []
        for pid in pids:
            fd_dir = os.path.join(self.proc_root, pid, "fd")
            try:
                targets = [os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)]
            except OSError:
                continue
            if any(t.startswith(prefix) and t[len(prefix):].isdigit() for t in targets):
                comm = self._read(os.path.join(self.proc_root, pid), "comm") or "?"
                users.append(f"{comm} (pid {pid})")
        return users

    @staticmethod
    def _read(directory: str, name: str) -> Optional[str]:
        try:
            with open(os.path.join(directory, name), "rb") as stream:
                return stream.read(_SMALL_READ).decode("utf-8", "replace").strip()
        except OSError:
            return None

    # -- the kernel log, for the kernel's own reason when a load fails -----------------------------------------------

    def open_kernel_log(self) -> Optional[int]:
        """A /dev/kmsg descriptor positioned at the end: what is read from it later is what happened since."""
        try:
            fd = os.open(os.path.join(self.dev_root, "kmsg"), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def kernel_log_since(fd: Optional[int], needle: str) -> List[str]:
        """Kernel log lines written since `open_kernel_log` that mention `needle`; closes `fd`."""
        if fd is None:
            return []
        lines = []
        try:
            for _ in range(_KMSG_MAX_RECORDS):
                try:
                    record = os.read(fd, 8192)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EPIPE:  # records were overwritten; keep reading what remains
                        continue
                    break
                if not record:
                    break
                # "<prio>,<seq>,<usec>,<flags>[,...];<message>\n", then " KEY=value" continuation lines.
                for line in record.decode("utf-8", "replace").splitlines():
                    message = line.split(";", 1)[-1]
                    if not line.startswith(" ") and needle in message:
                        lines.append(message)
        finally:
            os.close(fd)
        return lines

    # -- changes ----------------------------------------------------------------------------------------------------

    def finit_module(self, fd: int, flags: int = 0) -> None:
        self.syscalls.finit_module(fd, flags)

    def delete_module(self, name: str) -> None:
        self.syscalls.delete_module(name, os.O_NONBLOCK)

    def insmod(self, fd: int) -> Tuple[int, str]:
        """`insmod` on the same open file (through /proc/self/fd), for kernels without finit_module."""
        from driver_loader.system.runner import CommandRunner

        result = CommandRunner().run(["insmod", f"/proc/self/fd/{fd}"], timeout=_INSMOD_TIMEOUT, pass_fds=(fd,))
        if result.returncode is None:
            return -1, result.describe(_INSMOD_TIMEOUT)
        return result.returncode, result.output.strip()


# ---------------------------------------------------------------------------------------------------------------------
# Unloading


def unload_module(kernel: KernelModules, name: str, *, retries: int) -> Optional[LoadedModule]:
    """Unload `name` if it is loaded, retrying with backoff while it is in use; returns what was unloaded.

    Raises LoadError naming its holders and reference count when it stays in use; the module is left as it was.
    """
    module = kernel.loaded(name)
    if module is None:
        return None
    attempts = max(0, retries) + 1
    delay = UNLOAD_FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            kernel.delete_module(name)
            break
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                break  # gone in the meantime
            if exc.errno not in BUSY_ERRNOS:
                raise _unload_error(name, exc) from None
            if attempt == attempts:
                raise _busy_error(kernel, name, attempts) from None
        log.info("module is in use; waiting before trying to unload it again", module=name, attempt=attempt,
                 of=attempts, wait=f"{delay:g}s")
        kernel.sleep(delay)
        delay = min(delay * 2, UNLOAD_MAX_DELAY)
    log.info("unloaded module", module=name, version=module.version)
    return module


def _busy_error(kernel: KernelModules, name: str, attempts: int) -> LoadError:
    state = kernel.loaded(name)
    holders = ", ".join(state.holders) if state and state.holders else "none"
    refcnt = state.refcnt if state and state.refcnt is not None else "unknown"
    users = kernel.device_users(name)
    tried = [f"delete_module({name}, O_NONBLOCK) {attempts} time(s) with backoff"]
    if users:
        tried.append(f"processes with /dev/{name}* open: {', '.join(users)}")
    return LoadError(
        f"module {name} is still in use (refcnt {refcnt}, holders: {holders}); it was left loaded",
        tried=tried,
        hint="stop Falco (or whatever holds the module) and run again, or raise --unload-retries",
    )


def _unload_error(name: str, exc: OSError) -> LoaderError:
    if exc.errno == errno.EPERM:
        return LoadError(
            f"not permitted to unload module {name}: {exc.strerror}",
            tried=[f"delete_module({name})"],
            hint="run as root with CAP_SYS_MODULE (a privileged container)",
        )
    return LoadError(f"cannot unload module {name}: {exc.strerror or exc}", tried=[f"delete_module({name})"])


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def load_module(
    kernel: KernelModules,
    fd: int,
    *,
    name: str,
    version: str,
    compressed: bool = False,
    likely_causes: Sequence[str] = (),
) -> str:
    """Load the module open at `fd` and confirm that /sys/module/<name>/version is `version`.

    Returns how it was loaded. `likely_causes` (the pre-load checks' warnings) go into the message when the
    kernel refuses the module as invalid.
    """
    log_fd = kernel.open_kernel_log()
    method = "finit_module"
    try:
        kernel.finit_module(fd, MODULE_INIT_COMPRESSED_FILE if compressed else 0)
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            kernel.kernel_log_since(log_fd, name)
            _insmod(kernel, fd, name)
            method = "insmod"
        elif exc.errno == errno.EEXIST and _loaded_version(kernel, name) == version:
            kernel.kernel_log_since(log_fd, name)
            log.info("another loader loaded the same module meanwhile", module=name, version=version)
            return "already loaded"
        else:
            raise load_error(exc.errno or errno.EIO, name, kernel_log=kernel.kernel_log_since(log_fd, name),
                             likely_causes=likely_causes, loaded=kernel.loaded(name)) from None
    else:
        kernel.kernel_log_since(log_fd, name)
    confirm_loaded(kernel, name, version)
    return method


def _insmod(kernel: KernelModules, fd: int, name: str) -> None:
    log.info("finit_module is not available here; falling back to insmod", module=name)
    status, output = kernel.insmod(fd)
    if status != 0:
        raise LoadError(
            f"insmod could not load module {name}: {output or f'exit status {status}'}",
            tried=["finit_module (ENOSYS)", "insmod"],
            hint="dmesg shows the kernel's reason",
        )


def _loaded_version(kernel: KernelModules, name: str) -> Optional[str]:
    module = kernel.loaded(name)
    return module.version if module else None


def confirm_loaded(kernel: KernelModules, name: str, version: str) -> None:
    found = _loaded_version(kernel, name)
    if found != version:
        shown = "no module" if kernel.loaded(name) is None else f"version {found!r}"
        raise LoadError(
            f"after loading, /sys/module/{name} shows {shown}, expected version {version}",
            tried=[f"read {kernel.sys_root}/module/{name}/version"],
            hint="another process may have replaced the module; run `status` and try again",
        )


# errno -> (what happened, what to do). ENOEXEC, EEXIST and ENOENT get more context in load_error.
_LOAD_ERRORS = {
    errno.EKEYREJECTED: (
        "the kernel rejected the module's signature (Key was rejected by service)",
        "sign the module with a key the kernel trusts (enrolled with mokutil), disable module signature "
        "enforcement, or use the modern_ebpf driver",
    ),
    errno.ENOKEY: (
        "the module is signed with a key the kernel does not have (Required key not available)",
        "enroll the signing key (mokutil --import) or use the modern_ebpf driver",
    ),
    errno.EPERM: (
        "the kernel does not permit loading modules here (Operation not permitted)",
        "run as root with CAP_SYS_MODULE (a privileged container); check /proc/sys/kernel/modules_disabled and "
        "kernel lockdown, or use the modern_ebpf driver",
    ),
    errno.EBUSY: (
        "the kernel is busy loading or unloading a module with this name",
        "wait a moment and run again",
    ),
    errno.EACCES: (
        "access to the module file was denied (a security module such as SELinux or IMA refused it)",
        "label the cache for modules (chcon -t modules_object_t) or check the security policy's audit log",
    ),
    errno.ETXTBSY: (
        "the module file is open for writing by another process",
        "wait for the writer to finish and run again",
    ),
    errno.EINVAL: (
        "the kernel refused the module as invalid (Invalid parameters, or a compressed file it cannot decompress)",
        "dmesg shows the kernel's reason",
    ),
}


def load_error(
    code: int,
    name: str,
    *,
    kernel_log: Sequence[str] = (),
    likely_causes: Sequence[str] = (),
    loaded: Optional[LoadedModule] = None,
) -> LoadError:
    """The LoadError for a failed finit_module, from its errno, the kernel's log lines and our own checks."""
    tried = [f"finit_module: {errno.errorcode.get(code, code)} ({os.strerror(code)})"]
    tried += [f"kernel: {line}" for line in kernel_log]
    if code == errno.ENOEXEC:
        tried += [f"pre-load check: {cause}" for cause in likely_causes]
        cause = f"; likely cause: {likely_causes[0]}" if likely_causes else ""
        message = f"the kernel refused module {name}: Invalid module format{cause}"
        hint = ("the module does not match this kernel (vermagic, symbol versions or architecture); "
                "use the artifact built for the running kernel or build one against its headers")
    elif code == errno.EEXIST:
        found = f" (version {loaded.version})" if loaded and loaded.version else ""
        message = f"a module named {name} is already loaded{found}"
        hint = "another loader may be running; run `status`, or `cleanup` and try again"
    elif code == errno.ENOENT:
        message = f"the kernel refused module {name}: Unknown symbol in module"
        hint = ("the module uses kernel symbols this kernel does not export; it was built for another kernel "
                "or configuration — look at dmesg for the symbol names")
    elif code in _LOAD_ERRORS:
        what, hint = _LOAD_ERRORS[code]
        message = f"cannot load module {name}: {what}"
    else:
        message = f"cannot load module {name}: {os.strerror(code)}"
        hint = "dmesg shows the kernel's reason"
    if not kernel_log and code in (errno.ENOEXEC, errno.ENOENT, errno.EINVAL):
        hint += " (run `dmesg | tail` for the kernel's own message)"
    return LoadError(message, tried=tried, hint=hint)


# ---------------------------------------------------------------------------------------------------------------------
# Persisting across reboots


def persist_module(data: bytes, *, name: str, release: str, host_root: str = "/", runner=None,
                   timeout: float = DEFAULT_TOOL_TIMEOUT) -> str:
    """Install the verified module bytes as <host root>/lib/modules/<release>/extra/<name>.ko and run depmod, so
    `modprobe <name>` finds it after a reboot. The file appears whole or not at all."""
    directory = os.path.join(host_root, "lib/modules", release, "extra")
    path = os.path.join(directory, f"{name}.ko")
    from driver_loader.system.atomic import write_atomically

    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        write_atomically(path, data, mode=0o644)
    except OSError as exc:
        raise LoaderError(
            f"cannot install the module as {path}: {exc.strerror or exc}",
            tried=[f"write {path}"],
            hint="the module is loaded, but it will not come back after a reboot; check that /lib/modules is "
            "writable (the host's, when running in a container)",
        ) from None
    run_depmod(release, host_root=host_root, runner=runner, timeout=timeout)
    log.info("installed the module for modprobe", path=path)
    return path


def remove_persisted_module(*, name: str, release: str, host_root: str = "/", runner=None,
                            timeout: float = DEFAULT_TOOL_TIMEOUT) -> Optional[str]:
    """Undo persist_module; returns the removed path, or None when there was nothing."""
    path = os.path.join(host_root, "lib/modules", release, "extra", f"{name}.ko")
    if not os.path.lexists(path):
        return None
    try:
        os.unlink(path)
    except OSError as exc:
        raise LoaderError(f"cannot remove {path}: {exc.strerror or exc}") from None
    run_depmod(release, host_root=host_root, runner=runner, timeout=timeout)
    return path


def depmod_argv(release: str, host_root: str = "/") -> List[str]:
    """depmod for `release`, on the host's /lib/modules when the host is mounted elsewhere."""
    return ["depmod"] + (["-b", host_root] if host_root.rstrip("/") else []) + ["-a", release]


def run_depmod(release: str, *, host_root: str = "/", runner=None, timeout: float = DEFAULT_TOOL_TIMEOUT) -> None:
    if runner is None:
        from driver_loader.system.runner import CommandRunner

        runner = CommandRunner()
    argv = depmod_argv(release, host_root)
    result = runner.run(argv, timeout=timeout)
    if not result.ok:
        from driver_loader.build.local_build import TOOL_TIMEOUT_KNOB

        raise LoaderError(
            f"depmod failed for kernel {release}: {result.describe(timeout)}",
            tried=[" ".join(argv), *result.output.strip().splitlines()[-3:]],
            hint=(f"give depmod more time with {TOOL_TIMEOUT_KNOB}, or run `depmod -a` yourself"
                  if result.timed_out else
                  "install kmod (depmod), or run `depmod -a` yourself so modprobe sees the module"),
        )
