"""What a driver artifact says about itself, as the pre-load checks need it: pure data. artifacts/elf.py reads the
file (with pyelftools) and fills ArtifactInfo; core/checks.py judges it without knowing how it was read.
"""

from __future__ import annotations

import dataclasses
import re
import types
from typing import Dict, Mapping, Optional, Tuple

# ELF machine numbers (include/uapi/linux/elf-em.h).
EM_X86_64 = 62
EM_AARCH64 = 183
EM_BPF = 247
# The architectures Falco drivers are published for, by ELF machine number.
MACHINE_ARCH = types.MappingProxyType({EM_X86_64: "x86_64", EM_AARCH64: "aarch64"})
ARCH_MACHINE = types.MappingProxyType({arch: machine for machine, arch in MACHINE_ARCH.items()})

_SIGNATURE_ID_TYPES = {0: "PGP", 1: "X509", 2: "PKCS7"}
_VERSION_TRIPLET = re.compile(r"^\s*(\d+)\.(\d+)\.(\d+)\s*$")

Triplet = Tuple[int, int, int]


def format_triplet(version: Optional[Triplet]) -> Optional[str]:
    return None if version is None else ".".join(str(part) for part in version)


def parse_triplet(text: str) -> Optional[Triplet]:
    """"M.m.p" as written by the driver's API_VERSION/SCHEMA_VERSION, or None when it is not that."""
    match = _VERSION_TRIPLET.match(text)
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


@dataclasses.dataclass(frozen=True)
class ModuleSignature:
    """The `struct module_signature` in front of the trailer; the signature itself is not verified here."""

    id_type: int
    sig_len: int

    @property
    def id_type_name(self) -> str:
        return _SIGNATURE_ID_TYPES.get(self.id_type, f"unknown({self.id_type})")


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """What the kernel (kmod) or libscap (legacy eBPF) will look at before accepting the artifact.

    `driver_version`, `api_version`, `schema_version`, `build_commit` and `license` come from `.modinfo` for a
    kernel module and from the dedicated ELF sections for an eBPF probe, so callers need not care which.
    """

    kind: str  # "kmod" or "ebpf"
    elf_class: int  # 32 or 64
    elf_type: str  # "ET_REL" for both kinds of driver
    machine: str  # "EM_X86_64", or "EM_<number>" when unknown to pyelftools
    machine_number: int
    byte_order: str  # "little" or "big"
    arch: Optional[str]
    driver_version: Optional[str] = None
    api_version: Optional[Triplet] = None
    schema_version: Optional[Triplet] = None
    build_commit: Optional[str] = None
    license: Optional[str] = None
    # Kernel module only.
    modinfo_entries: Tuple[Tuple[str, str], ...] = ()
    has_modversions: bool = False
    symbol_crcs: Mapping[str, int] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    signature: Optional[ModuleSignature] = None
    # Legacy eBPF probe only.
    kernel_version: Optional[str] = None

    @property
    def modinfo(self) -> Dict[str, str]:
        """`.modinfo` as a dict; like the kernel's get_modinfo(), the first entry for a repeated key wins."""
        fields: Dict[str, str] = {}
        for key, value in self.modinfo_entries:
            fields.setdefault(key, value)
        return fields

    @property
    def name(self) -> Optional[str]:
        return self.modinfo.get("name")

    @property
    def vermagic(self) -> Optional[str]:
        return self.modinfo.get("vermagic")

    @property
    def signed(self) -> bool:
        return self.signature is not None

    def to_dict(self) -> dict:
        out: dict = {
            "kind": self.kind,
            "elf": {
                "class": f"ELF{self.elf_class}",
                "type": self.elf_type,
                "machine": self.machine,
                "machine_number": self.machine_number,
                "byte_order": self.byte_order,
            },
            "arch": self.arch,
            "driver_version": self.driver_version,
            "api_version": format_triplet(self.api_version),
            "schema_version": format_triplet(self.schema_version),
            "build_commit": self.build_commit,
            "license": self.license,
        }
        if self.kind == "kmod":
            out.update(
                name=self.name,
                vermagic=self.vermagic,
                srcversion=self.modinfo.get("srcversion"),
                modinfo=self.modinfo,
                modinfo_entries=[[key, value] for key, value in self.modinfo_entries],
                modversions=self.has_modversions,
                symbol_crcs={sym: f"0x{crc:08x}" for sym, crc in self.symbol_crcs.items()},
                signature={
                    "signed": self.signed,
                    "id_type": self.signature.id_type_name if self.signature else None,
                    "sig_len": self.signature.sig_len if self.signature else None,
                },
            )
        else:
            out["kernel_version"] = self.kernel_version
        return out
