"""Syscall numbers per architecture, for the few syscalls Python's os module lacks and the loader makes through
ctypes: finit_module and delete_module (loading and unloading the kernel module) and bpf (probing modern_ebpf).

Sources: arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h (aarch64).
"""

from __future__ import annotations

import platform
from typing import Dict, Optional

from driver_loader.core.errors import UsageError
from driver_loader.core.settings import normalize_arch

SYSCALLS: Dict[str, Dict[str, int]] = {
    "x86_64": {"finit_module": 313, "delete_module": 176, "bpf": 321},
    "aarch64": {"finit_module": 273, "delete_module": 106, "bpf": 280},
}


def syscall_numbers(machine: Optional[str] = None) -> Dict[str, int]:
    """The known syscall numbers of `machine` (uname -m spelling or an alias such as amd64; default this
    machine's); empty for an architecture we have none for."""
    try:
        return dict(SYSCALLS.get(normalize_arch(machine or platform.machine()), {}))
    except UsageError:
        return {}


def syscall_number(name: str, machine: Optional[str] = None) -> Optional[int]:
    """The number of syscall `name` on `machine`, or None when unknown there."""
    return syscall_numbers(machine).get(name)
