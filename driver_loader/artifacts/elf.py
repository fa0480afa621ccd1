"""Read a driver artifact (kernel module `.ko`, legacy eBPF probe `.o`) and extract what the kernel checks.

Everything here works on bytes already in memory; `read_artifact` is the only function that touches the
file system (and, for zstd without the `zstandard` package, the `zstd` binary). Input is untrusted: a
truncated download, an HTML error page or a hostile file must end in a VerificationError, never a traceback.
"""

from __future__ import annotations

import gzip
import io
import lzma
import shutil
import struct
import types
import zlib
from pathlib import Path
from typing import Dict, Mapping, Optional, Protocol, Tuple, Union

from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_E_MACHINE

from driver_loader.core.artifact_facts import (
    EM_BPF,
    MACHINE_ARCH,
    ArtifactInfo,
    ModuleSignature,
    Triplet,
    parse_triplet,
)
from driver_loader.core.errors import LoaderError, VerificationError
from driver_loader.system.files import FileTooLarge, NotRegularFile, UnreadableFile, format_size, read_regular_file

MAX_ARTIFACT_SIZE = 512 * 1024 * 1024
# What a compressed artifact may expand to (a Falco driver is a few MiB): the most memory decompressing one takes.
MAX_DECOMPRESSED_SIZE = 128 * 1024 * 1024

ELF_MAGIC = b"\x7fELF"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_ZSTD_PIECE = 256
_ZSTD_TIMEOUT = 120.0

SIGNATURE_MAGIC = b"~Module signature appended~\n"
# struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], __be32 sig_len.
_SIGNATURE_STRUCT = struct.Struct(">BBBBB3xI")

_ELF_TYPE_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
_MACHINE_NAMES = {number: name for name, number in ENUM_E_MACHINE.items() if name != "_default_"}

# Each `struct modversion_info` is `unsigned long crc` followed by the name, 64 bytes in total.
_MODVERSION_RECORD = 64
_SHT_NOBITS = "SHT_NOBITS"


def unpack_version(packed: int) -> Triplet:
    """Undo the driver's PPM_API_VERSION packing: major<<44 | minor<<24 | patch (19/20/24 bits)."""
    return (packed >> 44) & 0x7FFFF, (packed >> 24) & 0xFFFFF, packed & 0xFFFFFF


def pack_version(version: Triplet) -> int:
    major, minor, patch = version
    return (major & 0x7FFFF) << 44 | (minor & 0xFFFFF) << 24 | (patch & 0xFFFFFF)


def read_artifact(path: Union[str, Path], *, limit: int = MAX_ARTIFACT_SIZE) -> bytes:
    """The artifact's ELF bytes: the file, decompressed when it is xz, gzip or zstd (judged by content)."""
    return decompress(read_bounded(path, limit=limit), filename=str(path), limit=min(limit, MAX_DECOMPRESSED_SIZE))


def read_bounded(path: Union[str, Path], *, limit: int = MAX_ARTIFACT_SIZE) -> bytes:
    """The file's bytes as stored (still compressed, if it is); VerificationError when over `limit` or when it is
    not a regular file (a FIFO or device would block or never end)."""
    try:
        return read_regular_file(str(path), limit)
    except FileTooLarge as exc:
        raise VerificationError(str(exc), hint="a Falco driver is a few MiB; this is not a driver artifact") from None
    except NotRegularFile as exc:
        raise VerificationError(str(exc), hint="give the path of a driver file") from None
    except UnreadableFile as exc:
        raise LoaderError(
            f"cannot read {path}: {exc.strerror}",
            tried=[f"open {path}"],
            hint="check the path and that this user may read it",
        ) from None


def compression_of(data: bytes) -> Optional[str]:
    """"xz", "gzip", "zstd" or None, from the magic bytes (suffixes lie, e.g. a `.ko` that is really gzip)."""
    for magic, name in ((_XZ_MAGIC, "xz"), (_GZIP_MAGIC, "gzip"), (_ZSTD_MAGIC, "zstd")):
        if data.startswith(magic):
            return name
    return None


def decompress(data: bytes, *, filename: str = "", limit: int = MAX_DECOMPRESSED_SIZE) -> bytes:
    """`data` decompressed if it starts with a known compression magic, else unchanged; at most `limit` bytes.
    Decompression streams and stops one byte past `limit`, so a small bomb costs `limit` bytes of memory, not
    what it expands to."""
    kind = compression_of(data)
    if kind is None:
        return data
    label = filename or "artifact"
    try:
        if kind == "xz":
            with lzma.LZMAFile(io.BytesIO(data)) as stream:
                out = _read_stream(stream, limit)
        elif kind == "gzip":
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                out = _read_stream(stream, limit)
        else:
            out = _unzstd(data, label, limit)
    except (EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile) as exc:
        raise VerificationError(
            f"{label}: corrupt or truncated {kind} data ({exc})",
            hint="delete the file and download it again",
        ) from None
    if len(out) > limit:
        raise VerificationError(
            f"{label} decompresses to more than {format_size(limit)}",
            hint="a Falco driver is a few MiB; this is not a driver artifact",
        )
    return out


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def _read_stream(stream: _Readable, limit: int) -> bytes:
    """Up to limit+1 bytes, so the caller can tell 'exactly at the limit' from 'over it'. Gathered in one buffer
    that getvalue() hands over without a copy, so the peak stays near `limit`, not twice it."""
    out = io.BytesIO()
    while out.tell() <= limit:
        chunk = stream.read(min(1 << 20, limit + 1 - out.tell()))
        if not chunk:
            break
        out.write(chunk)
    return out.getvalue()


def _unzstd(data: bytes, label: str, limit: int) -> bytes:
    try:
        import zstandard
    except ImportError:
        pass
    else:
        try:
            return _unzstd_with_package(zstandard, data, label, limit)
        except zstandard.ZstdError as exc:
            raise VerificationError(
                f"{label}: corrupt or truncated zstd data ({exc})", hint="delete the file and download it again"
            ) from None
    binary = shutil.which("zstd")
    if binary is None:
        raise LoaderError(
            f"{label} is zstd-compressed and this system cannot decompress zstd",
            tried=["python package zstandard", "zstd binary in PATH"],
            hint="install the `zstandard` Python package or the `zstd` tool",
        )
    return _unzstd_with_binary(binary, data, label, limit)


def _unzstd_with_package(zstandard, data: bytes, label: str, limit: int) -> bytes:
    """Frame by frame, fed in small pieces: zstd's stream reader neither reports truncation nor bounds a single
    call's output, and one RLE block of a few bytes can expand to 128 KiB."""
    out = bytearray()
    position = 0
    while position < len(data):
        frame = zstandard.ZstdDecompressor().decompressobj()
        while not frame.eof:
            if position >= len(data):
                raise VerificationError(
                    f"{label}: corrupt or truncated zstd data (the last frame is incomplete)",
                    hint="delete the file and download it again",
                )
            piece = data[position : position + _ZSTD_PIECE]
            position += len(piece)
            out += frame.decompress(piece)
            if len(out) > limit:
                return out  # refused by the caller, so not worth a copy
        position -= len(frame.unused_data)
    return bytes(out)


def _unzstd_with_binary(binary: str, data: bytes, label: str, limit: int) -> bytes:
    from driver_loader.system.runner import CommandRunner

    out, result = CommandRunner().filter_bytes([binary, "-d", "-c", "-q"], data, limit=limit, timeout=_ZSTD_TIMEOUT)
    if len(out) > limit:
        return out
    if result.timed_out:
        raise LoaderError(f"{label}: {binary} did not finish decompressing within {_ZSTD_TIMEOUT:g} s",
                          tried=[f"{binary} -d -c"], hint="install the `zstandard` Python package and run again")
    if not result.ok:
        reason = result.stderr.strip().splitlines()
        raise VerificationError(
            f"{label}: corrupt or truncated zstd data ({reason[-1] if reason else f'zstd exit {result.returncode}'})",
            tried=[f"{binary} -d -c"],
            hint="delete the file and download it again",
        )
    return out


def inspect_artifact(data: bytes, *, filename: str = "") -> ArtifactInfo:
    """Parse a driver artifact (compressed or not) into ArtifactInfo; VerificationError when it is not one."""
    label = filename or "artifact"
    data = decompress(data, filename=filename)
    if len(data) > MAX_ARTIFACT_SIZE:
        raise VerificationError(
            f"{label} is larger than {MAX_ARTIFACT_SIZE} bytes",
            hint="a Falco driver is a few MiB; this is not a driver artifact",
        )
    if not data.startswith(ELF_MAGIC):
        raise VerificationError(
            f"{label} is not an ELF file (starts with {data[:8]!r})",
            hint="a driver is a .ko kernel module or a .o eBPF object; "
            "the download may be an error page or cut short — delete it and fetch it again",
        )
    payload, signature = _split_signature(data, label)
    try:
        return _parse_elf(payload, signature, label)
    except VerificationError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyelftools reports corrupt input through many exception types
        raise VerificationError(
            f"{label} is a malformed or truncated ELF file ({type(exc).__name__}: {exc})",
            hint="delete the file and download or build it again",
        ) from None


def _split_signature(data: bytes, label: str) -> Tuple[bytes, Optional[ModuleSignature]]:
    if not data.endswith(SIGNATURE_MAGIC):
        return data, None
    end = len(data) - len(SIGNATURE_MAGIC)
    header_start = end - _SIGNATURE_STRUCT.size
    if header_start < 0:
        raise VerificationError(f"{label}: module signature trailer without a signature header")
    _algo, _hash, id_type, _signer_len, _key_id_len, sig_len = _SIGNATURE_STRUCT.unpack_from(data, header_start)
    if sig_len == 0 or sig_len > header_start:
        raise VerificationError(
            f"{label}: module signature length {sig_len} does not fit in the file",
            hint="the signature is corrupt; the kernel would refuse it (EBADMSG) — rebuild or re-sign the module",
        )
    return data[: header_start - sig_len], ModuleSignature(id_type=id_type, sig_len=sig_len)


def _parse_elf(payload: bytes, signature: Optional[ModuleSignature], label: str) -> ArtifactInfo:
    if len(payload) < 16 or payload[4] not in (1, 2) or payload[5] not in (1, 2):
        raise VerificationError(f"{label}: invalid ELF identification (class/byte order)")
    elf_class = 32 if payload[4] == 1 else 64
    byte_order = "little" if payload[5] == 1 else "big"
    endian = "<" if byte_order == "little" else ">"
    header_size = 52 if elf_class == 32 else 64
    if len(payload) < header_size:
        raise VerificationError(f"{label} is truncated: {len(payload)} bytes, shorter than an ELF header")
    e_type, e_machine = struct.unpack_from(endian + "HH", payload, 16)

    elf = ELFFile(io.BytesIO(payload))
    sections = _sections(elf, len(payload), label)
    common = dict(
        elf_class=elf_class,
        elf_type=_ELF_TYPE_NAMES.get(e_type, f"0x{e_type:x}"),
        machine=_MACHINE_NAMES.get(e_machine, f"EM_{e_machine}"),
        machine_number=e_machine,
        byte_order=byte_order,
        arch=MACHINE_ARCH.get(e_machine),
    )
    if e_machine == EM_BPF:
        return _bpf_info(sections, endian, label, common)
    return _kmod_info(sections, elf_class, endian, signature, label, common)


def _sections(elf: ELFFile, size: int, label: str) -> Dict[str, bytes]:
    """Section name -> contents, refusing any section that claims bytes past the end of the file."""
    sections: Dict[str, bytes] = {}
    for section in elf.iter_sections():
        if section["sh_type"] == _SHT_NOBITS:
            continue
        start, length = section["sh_offset"], section["sh_size"]
        if start + length > size:
            raise VerificationError(
                f"{label} is truncated or corrupt: section {section.name or '?'} ends at byte {start + length}, "
                f"the file has {size}",
                hint="delete the file and download it again",
            )
        sections.setdefault(section.name, section.data())
    return sections


def _kmod_info(
    sections: Mapping[str, bytes],
    elf_class: int,
    endian: str,
    signature: Optional[ModuleSignature],
    label: str,
    common: dict,
) -> ArtifactInfo:
    entries = _modinfo_entries(sections.get(".modinfo", b""))
    modinfo: Dict[str, str] = {}
    for key, value in entries:
        modinfo.setdefault(key, value)
    crcs = _symbol_crcs(sections, elf_class, endian, label)
    return ArtifactInfo(
        kind="kmod",
        driver_version=modinfo.get("version"),
        api_version=parse_triplet(modinfo.get("api_version", "")),
        schema_version=parse_triplet(modinfo.get("schema_version", "")),
        build_commit=modinfo.get("build_commit"),
        license=modinfo.get("license"),
        modinfo_entries=entries,
        has_modversions=crcs is not None,
        symbol_crcs=types.MappingProxyType(crcs or {}),
        signature=signature,
        **common,
    )


def _modinfo_entries(raw: bytes) -> Tuple[Tuple[str, str], ...]:
    entries = []
    for item in raw.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep and key:
            entries.append((key, value))
    return tuple(entries)


def _symbol_crcs(sections: Mapping[str, bytes], elf_class: int, endian: str, label: str) -> Optional[Dict[str, int]]:
    """Imported symbol -> CRC, or None when the module carries no symbol versions at all.

    Extended modversions (`__version_ext_crcs` + `__version_ext_names`, Linux 6.14+) are preferred because
    `__versions` truncates long names and may be dropped entirely with CONFIG_BASIC_MODVERSIONS=n.
    """
    ext_crcs, ext_names = sections.get("__version_ext_crcs"), sections.get("__version_ext_names")
    if ext_crcs is not None or ext_names is not None:
        if ext_crcs is None or ext_names is None or len(ext_crcs) % 4:
            raise VerificationError(f"{label}: malformed extended modversions sections")
        count = len(ext_crcs) // 4
        values = struct.unpack(f"{endian}{count}I", ext_crcs)
        names = ext_names.split(b"\0")
        if len(names) <= count and count:
            raise VerificationError(f"{label}: __version_ext_names has fewer names than __version_ext_crcs has CRCs")
        return {name.decode("utf-8", "replace"): crc for name, crc in zip(names[:count], values)}
    versions = sections.get("__versions")
    if versions is None:
        return None
    if len(versions) % _MODVERSION_RECORD:
        raise VerificationError(
            f"{label}: __versions is {len(versions)} bytes, not a whole number of {_MODVERSION_RECORD}-byte records"
        )
    crc_format = endian + ("Q" if elf_class == 64 else "I")
    crc_size = struct.calcsize(crc_format)
    crcs: Dict[str, int] = {}
    for offset in range(0, len(versions), _MODVERSION_RECORD):
        record = versions[offset : offset + _MODVERSION_RECORD]
        (crc,) = struct.unpack_from(crc_format, record)
        name = record[crc_size:].split(b"\0", 1)[0].decode("utf-8", "replace")
        crcs[name] = crc & 0xFFFFFFFF
    return crcs


def _bpf_info(sections: Mapping[str, bytes], endian: str, label: str, common: dict) -> ArtifactInfo:
    def text(name: str) -> Optional[str]:
        raw = sections.get(name)
        return None if raw is None else raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def packed(prefix: str) -> Optional[Triplet]:
        # libscap matches these two sections by prefix, so do the same.
        raw = next((data for name, data in sections.items() if name.startswith(prefix)), None)
        if raw is None:
            return None
        if len(raw) < 8:
            raise VerificationError(f"{label}: section {prefix} is {len(raw)} bytes, expected an 8-byte version")
        (value,) = struct.unpack_from(endian + "Q", raw)
        return unpack_version(value)

    return ArtifactInfo(
        kind="ebpf",
        driver_version=text("probe_version"),
        api_version=packed("api_version"),
        schema_version=packed("schema_version"),
        build_commit=text("build_commit"),
        license=text("license"),
        kernel_version=text("kernel_version"),
        **common,
    )
