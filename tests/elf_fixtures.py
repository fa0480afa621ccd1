"""Real driver-shaped ELF files, compiled at test time from a few lines of C.

Kernel-module look-alikes come from `gcc -c` (a `.modinfo` section of NUL-terminated key=value strings, a
`__versions` table of 64-byte records, optionally the extended modversions pair and a module signature trailer);
legacy eBPF probe look-alikes come from `clang -target bpf -c` with the metadata sections libscap reads. They load
nowhere, but the loader's parser sees exactly what it would see in a real artifact.

Use from any test module (the tests directory is on sys.path):

    from elf_fixtures import make_kmod, make_bpf_probe, compress_file, patch_machine

Every maker skips the calling test (pytest.skip, with the reason) when its compiler is not installed.
"""

from __future__ import annotations

import gzip
import lzma
import platform
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Tuple

import pytest

DEFAULT_VERMAGIC = "6.1.0-56-amd64 SMP preempt mod_unload modversions "
# CRCs as in the Debian 6.1.0-56-amd64 kernel's Module.symvers (module_layout) and made-up ones for the rest.
DEFAULT_CRCS: Mapping[str, int] = {
    "module_layout": 0x9060323F,
    "tracepoint_probe_unregister": 0x112A62AD,
    "alloc_chrdev_region": 0xE3EC2F2B,
}
FAKE_SIGNATURE_LENGTH = 413
SIGNATURE_MAGIC = b"~Module signature appended~\n"
PKCS7 = 2

_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
    platform.machine().lower()
)
# Compilers that emit objects for each architecture: a cross compiler, or plain gcc on a matching host.
_KMOD_COMPILERS = {
    "x86_64": ("x86_64-linux-gnu-gcc",) + (("gcc", "cc") if _HOST_ARCH == "x86_64" else ()),
    "aarch64": ("aarch64-linux-gnu-gcc",) + (("gcc", "cc") if _HOST_ARCH == "aarch64" else ()),
}


def find_compiler(arch: str) -> Optional[str]:
    """A C compiler that produces `arch` objects, or None."""
    return next((cc for cc in _KMOD_COMPILERS.get(arch, ()) if shutil.which(cc)), None)


def make_kmod(
    directory: Path,
    *,
    name: Optional[str] = "falco",
    version: Optional[str] = "8.0.0+driver",
    vermagic: Optional[str] = DEFAULT_VERMAGIC,
    api_version: Optional[str] = "8.0.0",
    schema_version: Optional[str] = "2.0.0",
    modversions: bool = True,
    extended_modversions: bool = False,
    signed: bool = False,
    crcs: Optional[Mapping[str, int]] = None,
    arch: str = "x86_64",
    license: Optional[str] = "Dual MIT/GPL",
    build_commit: Optional[str] = "0123456789abcdef0123456789abcdef01234567",
    srcversion: Optional[str] = "D40C8C8FED995B493A1494F",
    extra_modinfo: Sequence[Tuple[str, str]] = (),
    extra_c: str = "",
    filename: Optional[str] = None,
) -> Path:
    """Compile a kernel-module look-alike into `directory` and return its path (`<name>.ko` by default).

    A `None` field is left out of `.modinfo`. `crcs` (symbol -> CRC) fills `__versions` when `modversions`, and
    the `__version_ext_crcs`/`__version_ext_names` pair when `extended_modversions`. `signed` appends a fake
    PKCS#7 signature with a valid trailer. `extra_c` is appended to the source for unusual sections.
    """
    compiler = find_compiler(arch)
    if compiler is None:
        pytest.skip(f"no C compiler for {arch} objects (install gcc, or gcc-aarch64-linux-gnu for aarch64)")
    fields = [
        ("name", name),
        ("version", version),
        ("vermagic", vermagic),
        ("api_version", api_version),
        ("schema_version", schema_version),
        ("license", license),
        ("build_commit", build_commit),
        ("srcversion", srcversion),
        ("depends", ""),
        ("retpoline", "Y"),
        *extra_modinfo,
    ]
    symbols = dict(DEFAULT_CRCS if crcs is None else crcs)
    source = [
        "struct modversion_info { unsigned long crc; char name[64 - sizeof(unsigned long)]; };",
        "int init_module(void) { return 0; }",
    ]
    # A single array keeps the entries in this order (separate variables may be emitted in any order).
    modinfo = "".join(f"{key}={value}\0" for key, value in fields if value is not None)
    source.append(_c_bytes_array("__modinfo", ".modinfo", modinfo.encode(), align=1))
    if modversions and symbols:
        records = ", ".join(f"{{ 0x{crc:x}UL, {_c_string(sym)} }}" for sym, crc in symbols.items())
        source.append(
            "static const struct modversion_info ____versions[] "
            f'__attribute__((section("__versions"), used, aligned(8))) = {{ {records} }};'
        )
    if extended_modversions and symbols:
        values = ", ".join(f"0x{crc:x}U" for crc in symbols.values())
        source.append(
            "static const unsigned int ____version_ext_crcs[] "
            f'__attribute__((section("__version_ext_crcs"), used, aligned(4))) = {{ {values} }};'
        )
        names = "".join(f"{sym}\0" for sym in symbols).encode()
        source.append(_c_bytes_array("____version_ext_names", "__version_ext_names", names, align=1))
    source.append(extra_c)
    path = directory / (filename or f"{name or 'module'}.ko")
    _compile([compiler, "-c", "-O2", "-x", "c", "-", "-o", str(path)], "\n".join(source))
    if signed:
        with path.open("ab") as out:
            out.write(fake_signature_trailer())
    return path


def fake_signature_trailer(sig_len: int = FAKE_SIGNATURE_LENGTH, id_type: int = PKCS7) -> bytes:
    """Signature bytes, `struct module_signature` (big-endian sig_len) and the marker, as sign-file appends them."""
    signature = b"\x30\x82" + b"\x00" * (sig_len - 2)
    return signature + struct.pack(">BBBBB3xI", 0, 0, id_type, 0, 0, sig_len) + SIGNATURE_MAGIC


def make_bpf_probe(
    directory: Path,
    *,
    kernel_version: Optional[str],
    api: Optional[Tuple[int, int, int]] = (8, 0, 0),
    schema: Optional[Tuple[int, int, int]] = (2, 0, 0),
    probe_version: Optional[str] = "8.0.0+driver",
    license: Optional[str] = "Dual MIT/GPL",
    build_commit: Optional[str] = "",
    filename: str = "probe.o",
) -> Path:
    """Compile a legacy eBPF probe look-alike (sections as in driver/bpf/probe.c); a `None` field is left out."""
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (needed for `clang -target bpf` probe fixtures)")
    source = []
    for section, value in (
        ("kernel_version", kernel_version),
        ("license", license),
        ("probe_version", probe_version),
        ("build_commit", build_commit),
    ):
        if value is not None:
            source.append(f'char {section}_value[] __attribute__((section("{section}"), used)) = {_c_string(value)};')
    for section, triplet in (("api_version", api), ("schema_version", schema)):
        if triplet is not None:
            source.append(
                f'unsigned long long {section}_value __attribute__((section("{section}"), used)) = '
                f"0x{pack_version(triplet):x}ULL;"
            )
    path = directory / filename
    _compile(["clang", "-target", "bpf", "-O2", "-c", "-x", "c", "-", "-o", str(path)], "\n".join(source))
    return path


def pack_version(triplet: Tuple[int, int, int]) -> int:
    """The driver's PPM_API_VERSION packing (written out here so the tests do not trust the code under test)."""
    major, minor, patch = triplet
    return major << 44 | minor << 24 | patch


def compress_file(path: Path, kind: str, *, suffix: Optional[str] = None) -> Path:
    """Write `path` compressed with xz, gzip or zstd next to it (`<file>.xz` etc. unless `suffix` is given)."""
    data = path.read_bytes()
    target = path.with_name(path.name + (suffix if suffix is not None else {"xz": ".xz", "gzip": ".gz",
                                                                          "zstd": ".zst"}[kind]))
    if kind == "xz":
        # The kernel's own modules use CRC32 xz checks.
        target.write_bytes(lzma.compress(data, check=lzma.CHECK_CRC32))
    elif kind == "gzip":
        target.write_bytes(gzip.compress(data))
    elif kind == "zstd":
        if shutil.which("zstd") is None:
            pytest.skip("the zstd tool is not installed (needed to make .zst fixtures)")
        target.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout)
    else:
        raise ValueError(f"unknown compression {kind!r}")
    return target


def patch_machine(path: Path, machine: int, *, filename: Optional[str] = None) -> Path:
    """A copy of a little-endian ELF file with e_machine replaced: a wrong-architecture artifact without a
    cross compiler."""
    data = bytearray(path.read_bytes())
    data[18:20] = struct.pack("<H", machine)
    target = path.with_name(filename or f"{path.stem}-machine{machine}{path.suffix}")
    target.write_bytes(bytes(data))
    return target


def _compile(command: Iterable[str], source: str) -> None:
    command = list(command)
    result = subprocess.run(command, input=source.encode(), capture_output=True)
    if result.returncode != 0:
        raise AssertionError(
            f"fixture compile failed: {' '.join(command)}\n{result.stderr.decode()}\n--- source ---\n{source}"
        )


def _c_bytes_array(variable: str, section: str, data: bytes, *, align: int) -> str:
    """A `const char[]` holding exactly `data` (no extra trailing NUL) in `section`."""
    values = ", ".join(str(b) for b in data) or "0"
    size = len(data) or 1
    return (
        f"static const char {variable}[{size}] "
        f'__attribute__((section("{section}"), used, aligned({align}))) = {{ {values} }};'
    )


def _c_string(text: str) -> str:
    """A C string literal for `text`, every non-printable byte as a three-digit octal escape."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\' or not 0x20 <= byte < 0x7F:
            out.append(f"\\{byte:03o}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
