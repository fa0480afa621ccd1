"""Whether the running kernel can run Falco's modern eBPF probe: BTF, a BPF ring buffer, and kernel >= 5.8.

modern_ebpf ships inside Falco, so there is nothing to download; we only check the kernel, as libpman does.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
from typing import Optional

from driver_loader.core.kernelrelease import MODERN_EBPF_MIN_KERNEL, parse_kernel_release
from driver_loader.system.syscalls import syscall_number

_BPF_MAP_CREATE = 0
_BPF_MAP_TYPE_RINGBUF = 27


@dataclasses.dataclass(frozen=True)
class ModernEbpfSupport:
    supported: bool
    btf: bool
    ringbuf: Optional[bool]  # None: could not be tested (no privileges or unknown arch)
    kernel_ok: bool
    reason: str


class _MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
    ]


def ringbuf_map_creatable() -> Optional[bool]:
    """Create (and close) a BPF ring buffer map. None when the answer is unknowable here (EPERM, unknown arch)."""
    nr = syscall_number("bpf")
    if nr is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    attr = _MapCreateAttr(_BPF_MAP_TYPE_RINGBUF, 0, 0, 4096 * 16, 0)
    fd = libc.syscall(nr, _BPF_MAP_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd >= 0:
        os.close(fd)
        return True
    err = ctypes.get_errno()
    if err in (errno.EPERM, errno.EACCES):
        return None
    return False


def check_support(release: Optional[str] = None, *, btf_path: str = "/sys/kernel/btf/vmlinux",
                  probe=ringbuf_map_creatable) -> ModernEbpfSupport:
    release = release or os.uname().release
    kernel_ok = parse_kernel_release(release).version >= MODERN_EBPF_MIN_KERNEL
    btf = os.path.exists(btf_path)
    ringbuf = probe() if btf else None
    if not btf:
        reason = f"no kernel BTF at {btf_path}"
    elif ringbuf is False:
        reason = "the kernel refused to create a BPF ring buffer map"
    elif ringbuf is None and not kernel_ok:
        reason = f"kernel {release} is older than 5.8"
    else:
        reason = "BTF present and BPF ring buffer " + ("available" if ringbuf else "assumed (kernel >= 5.8)")
    # A ring buffer that really works beats the version heuristic (distros backport it); without privileges to
    # try it, fall back to the documented heuristic.
    supported = btf and (ringbuf is True or (ringbuf is None and kernel_ok))
    return ModernEbpfSupport(supported, btf, ringbuf, kernel_ok, reason)
