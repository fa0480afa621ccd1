"""A kernel-module look-alike for the registry fleet row, compiled at bench time from a few lines of C with gcc: a
`.modinfo` section (name, version, vermagic naming the simulated kernel, API and schema versions) and a
`__versions` table. It loads nowhere, but the loader's ELF checks see what they would see in a real module. The
same idea as tests/elf_fixtures.py, reduced to what the bench needs (the bench does not import the tests)."""

from __future__ import annotations

import platform
import shutil
import subprocess
from typing import Optional

# The machine's architecture as the loader names it, and the compiler that emits objects for it.
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
    platform.machine().lower())
# A CRC as in Debian's 6.1 Module.symvers; the simulated kernel has no symvers to compare it with.
MODULE_LAYOUT_CRC = 0x9060323F


def find_compiler() -> Optional[str]:
    """gcc (or cc) when it emits objects for the loader's name of this machine's architecture, else None."""
    if HOST_ARCH is None:
        return None
    return next((cc for cc in ("gcc", "cc") if shutil.which(cc)), None)


def make_kmod(path: str, *, kernel_release: str, name: str = "falco", version: str = "8.0.0+driver",
              api_version: str = "8.0.0", schema_version: str = "2.0.0", timeout: float = 60.0) -> None:
    """Compile a module whose vermagic names `kernel_release` into `path`; RuntimeError when gcc is missing or
    fails."""
    compiler = find_compiler()
    if compiler is None:
        raise RuntimeError(f"no C compiler for {platform.machine()} objects: install gcc")
    fields = [("name", name), ("version", version),
              ("vermagic", f"{kernel_release} SMP preempt mod_unload modversions "),
              ("api_version", api_version), ("schema_version", schema_version), ("license", "Dual MIT/GPL"),
              ("srcversion", "D40C8C8FED995B493A1494F"), ("depends", ""), ("retpoline", "Y")]
    modinfo = "".join(f"{key}={value}\0" for key, value in fields).encode()
    source = "\n".join([
        "struct modversion_info { unsigned long crc; char name[64 - sizeof(unsigned long)]; };",
        "int init_module(void) { return 0; }",
        # One array keeps the entries in this order (separate variables may be emitted in any order).
        f"static const char __modinfo[{len(modinfo)}] __attribute__((section(\".modinfo\"), used, aligned(1))) = "
        f"{{ {', '.join(str(b) for b in modinfo)} }};",
        "static const struct modversion_info ____versions[] __attribute__((section(\"__versions\"), used, "
        f"aligned(8))) = {{ {{ 0x{MODULE_LAYOUT_CRC:x}UL, \"module_layout\" }} }};",
    ])
    try:
        result = subprocess.run([compiler, "-c", "-O2", "-x", "c", "-", "-o", path], input=source.encode(),
                                capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{compiler} did not finish within {timeout:g} s") from None
    if result.returncode != 0:
        raise RuntimeError(f"{compiler} failed: {result.stderr.decode('utf-8', 'replace').strip()[-500:]}")
