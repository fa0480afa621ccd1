"""A pretend kernel for driver_loader.kernel.modules.KernelModules: /sys, /proc and /dev trees in a temporary directory, and
module syscalls that act on them the way the kernel would (a successful load creates /sys/module/<name> with the
version from the module's .modinfo; an unload removes it).

    from fake_kernel import FakeKernel
    kernel = FakeKernel(tmp_path)
    kernel.add_module("falco", "7.0.0+driver")
    modules = kernel.modules()          # a KernelModules wired to this fake
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from driver_loader.kernel.modules import KernelModules

_MODINFO_NAME = re.compile(rb"(?:^|\x00)name=([^\x00]*)\x00")
_MODINFO_VERSION = re.compile(rb"\x00version=([^\x00]*)\x00")


class FakeKernel:
    def __init__(self, root: Path, *, modules_supported: bool = True) -> None:
        self.sys_root = root / "sys"
        self.proc_root = root / "proc"
        self.dev_root = root / "dev"
        for directory in (self.sys_root / "module", self.proc_root, self.dev_root):
            directory.mkdir(parents=True, exist_ok=True)
        (self.dev_root / "kmsg").write_text("")
        if modules_supported:
            (self.proc_root / "modules").write_text("")
        self.euid = 0
        self.finit_errors: List[int] = []  # errnos raised by successive finit_module calls, then success
        self.delete_errors: List[int] = []  # errnos raised by successive delete_module calls, then success
        self.always_busy = False
        self.kernel_log_on_failure: Optional[str] = None
        self.loaded_version_override: Optional[str] = None
        self.before_finit: Optional[Callable[[int], None]] = None
        self.on_delete: Optional[Callable[[str], None]] = None
        self.calls: List[tuple] = []
        self.loaded_images: List[bytes] = []
        self.sleeps: List[float] = []

    def modules(self) -> KernelModules:
        return KernelModules(
            sys_root=str(self.sys_root),
            proc_root=str(self.proc_root),
            dev_root=str(self.dev_root),
            syscalls=self,
            sleep=self.sleeps.append,
            euid=lambda: self.euid,
        )

    def add_module(self, name: str, version: Optional[str], *, refcnt: int = 0, holders: Sequence[str] = (),
                   srcversion: str = "D40C8C8FED995B493A1494F", initstate: str = "live") -> Path:
        directory = self.sys_root / "module" / name
        (directory / "holders").mkdir(parents=True, exist_ok=True)
        for holder in holders:
            (directory / "holders" / holder).mkdir(exist_ok=True)
        if version is not None:
            (directory / "version").write_text(version + "\n")
        (directory / "srcversion").write_text(srcversion + "\n")
        (directory / "refcnt").write_text(f"{refcnt}\n")
        (directory / "initstate").write_text(initstate + "\n")
        return directory

    def module_version(self, name: str) -> Optional[str]:
        path = self.sys_root / "module" / name / "version"
        return path.read_text().strip() if path.exists() else None

    def syscall_names(self) -> List[str]:
        return [call[0] for call in self.calls]

    # -- the Syscalls interface ---------------------------------------------------------------------------------------

    def finit_module(self, fd: int, flags: int = 0) -> None:
        if self.before_finit is not None:
            self.before_finit(fd)
        image = os.pread(fd, 1 << 30, 0)
        self.calls.append(("finit_module", fd, flags, hashlib.sha256(image).hexdigest()))
        self.loaded_images.append(image)
        if self.finit_errors:
            code = self.finit_errors.pop(0)
            if self.kernel_log_on_failure:
                with open(self.dev_root / "kmsg", "a") as kmsg:
                    kmsg.write(f"3,1042,123456,-;{self.kernel_log_on_failure}\n SUBSYSTEM=module\n")
            raise OSError(code, os.strerror(code))
        name = _MODINFO_NAME.search(image)
        version = _MODINFO_VERSION.search(image)
        if name is None:
            raise OSError(errno.ENOEXEC, os.strerror(errno.ENOEXEC))
        self.add_module(name.group(1).decode(),
                        self.loaded_version_override or (version.group(1).decode() if version else None))

    def delete_module(self, name: str, flags: int) -> None:
        self.calls.append(("delete_module", name, flags))
        if self.on_delete is not None:
            self.on_delete(name)
        if self.always_busy:
            raise OSError(errno.EWOULDBLOCK, os.strerror(errno.EWOULDBLOCK))
        if self.delete_errors:
            code = self.delete_errors.pop(0)
            raise OSError(code, os.strerror(code))
        directory = self.sys_root / "module" / name
        if not directory.exists():
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        for path in sorted(directory.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        directory.rmdir()
