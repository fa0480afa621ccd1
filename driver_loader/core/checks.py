"""Will this artifact load on this kernel, and will Falco accept it? Pure checks, run before anything is loaded.

The order and the rules follow the kernel (kernel/module/main.c, version.c, signing.c) and libscap
(scap_api_version.c, the legacy bpf engine). Each failure says what the kernel or libscap would do and what to do
instead, so a bad artifact ends in a clear message rather than insmod's "Invalid module format".
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Protocol, Sequence, Tuple, Union

from driver_loader.core.artifact_facts import (
    ARCH_MACHINE,
    EM_BPF,
    ArtifactInfo,
    Triplet,
    format_triplet,
    parse_triplet,
)
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import UsageError
from driver_loader.core.kernel import SIGNATURE_ENFORCING_LOCKDOWN, RunningKernel

MODULES_UNSUPPORTED = "modules_unsupported"
ARTIFACT_KIND = "artifact_kind"
ELF_CLASS = "elf_class"
ELF_TYPE = "elf_type"
ELF_MACHINE = "elf_machine"
VERMAGIC = "vermagic"
KERNEL_RELEASE = "kernel_release"
SYMBOL_CRCS = "symbol_crcs"
DRIVER_VERSION = "driver_version"
API_VERSION = "api_version"
SCHEMA_VERSION = "schema_version"
SIGNATURE = "signature"
EBPF_KERNEL_VERSION = "ebpf_kernel_version"

_LISTED_SYMBOLS = 5


class VersionRange(Protocol):
    def contains(self, version: str) -> bool: ...


@dataclasses.dataclass(frozen=True)
class Finding:
    """One check's outcome. `warning` marks an ok=True finding that could not be fully checked."""

    ok: bool
    code: str
    message: str
    hint: str = ""
    warning: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_artifact(
    info: ArtifactInfo,
    kernel: RunningKernel,
    *,
    driver_type: Union[DriverType, str],
    compatible: Optional[VersionRange] = None,
    required_api: Union[str, Triplet, None] = None,
    required_schema: Union[str, Triplet, None] = None,
) -> List[Finding]:
    """Every check that applies to this kind of artifact, in the order the kernel and libscap apply them."""
    kind = DriverType(driver_type)
    findings: List[Finding] = []
    if kind is DriverType.KMOD:
        findings.append(_module_support(kernel))
    findings.append(_artifact_kind(info, kind))
    findings += _elf_header(info, kernel)
    if info.kind == "kmod":
        findings += _vermagic_and_release(info, kernel)
    if compatible is not None:
        findings.append(_driver_version(info, compatible))
    # The legacy probe's schema rule is stricter (libs 0.20-0.23 check_schema_version_compatibility).
    findings += _interface_version(info, API_VERSION, info.api_version, required_api, exact_minor=False)
    findings += _interface_version(
        info, SCHEMA_VERSION, info.schema_version, required_schema, exact_minor=info.kind == "ebpf"
    )
    if info.kind == "kmod":
        findings.append(_signature(info, kernel))
    else:
        findings.append(_ebpf_kernel_version(info, kernel))
    return findings


def _judged(kernel: RunningKernel) -> str:
    """How messages name the kernel being judged."""
    return "the running kernel" if kernel.running else "the named kernel"


def summarize(findings: Sequence[Finding]) -> Tuple[bool, List[str]]:
    """(fits, reasons): fits when nothing failed; the reasons are the failures' messages, in check order."""
    reasons = [finding.message for finding in findings if not finding.ok]
    return not reasons, reasons


def interface_compatible(have: Triplet, required: Triplet, *, exact_minor: bool = False) -> bool:
    """libscap's semver rule: same major and (minor, patch) >= required; with `exact_minor` the minor must match."""
    if have[0] != required[0]:
        return False
    if exact_minor:
        return have[1] == required[1] and have[2] >= required[2]
    return (have[1], have[2]) >= (required[1], required[2])


def _module_support(kernel: RunningKernel) -> Finding:
    if not kernel.running:
        return Finding(True, MODULES_UNSUPPORTED, f"kernel {kernel.release} is not the running kernel: whether it "
                       "supports loadable modules is not checked", warning=True)
    if kernel.modules_supported:
        return Finding(True, MODULES_UNSUPPORTED, "the kernel supports loadable modules")
    return Finding(
        False,
        MODULES_UNSUPPORTED,
        "the running kernel cannot load modules (no /proc/modules: CONFIG_MODULES is off)",
        hint="use the modern_ebpf driver (--type modern_ebpf), which needs no kernel module",
    )


def _artifact_kind(info: ArtifactInfo, kind: DriverType) -> Finding:
    if info.kind == kind.value:
        return Finding(True, ARTIFACT_KIND, f"artifact is a {_kind_name(info.kind)}")
    return Finding(
        False,
        ARTIFACT_KIND,
        f"artifact is a {_kind_name(info.kind)}, but a {kind.value} driver was asked for",
        hint=f"use a {kind.extension or 'no'} artifact for {kind.value}, or pick the driver type that matches the file",
    )


def _kind_name(kind: str) -> str:
    return "kernel module" if kind == "kmod" else "legacy eBPF probe"


def _elf_header(info: ArtifactInfo, kernel: RunningKernel) -> List[Finding]:
    findings = []
    if info.elf_class == 64:
        findings.append(Finding(True, ELF_CLASS, "ELF64"))
    else:
        findings.append(Finding(
            False, ELF_CLASS, f"artifact is ELF{info.elf_class}; Falco drivers are ELF64",
            hint="this is not a driver for a 64-bit kernel; get the artifact for this architecture",
        ))
    if info.elf_type == "ET_REL":
        findings.append(Finding(True, ELF_TYPE, "relocatable object (ET_REL)"))
    else:
        findings.append(Finding(
            False, ELF_TYPE, f"artifact is {info.elf_type}, not a relocatable object (ET_REL)",
            hint="kernel modules and eBPF probes are ET_REL objects; this file is something else",
        ))
    findings.append(_machine(info, kernel))
    return findings


def _machine(info: ArtifactInfo, kernel: RunningKernel) -> Finding:
    if info.kind == "ebpf":
        expected: Optional[int] = EM_BPF
        expected_name = "EM_BPF"
    else:
        expected = ARCH_MACHINE.get(kernel.arch)
        expected_name = f"{kernel.arch}"
    if expected is None:
        return Finding(
            True, ELF_MACHINE, f"artifact is for {info.machine}; cannot tell what {kernel.arch} kernels expect",
            hint="Falco publishes drivers for x86_64 and aarch64 only", warning=True,
        )
    if info.machine_number == expected:
        return Finding(True, ELF_MACHINE, f"machine {info.machine} matches {expected_name}")
    return Finding(
        False,
        ELF_MACHINE,
        f"artifact is built for {info.arch or info.machine}, this kernel is {kernel.arch} (needs {expected_name})",
        hint=f"the kernel would refuse it as 'Invalid module format'; get the {kernel.arch} artifact",
    )


def _vermagic_and_release(info: ArtifactInfo, kernel: RunningKernel) -> List[Finding]:
    modmagic = info.vermagic
    if not modmagic:
        return [Finding(
            False, VERMAGIC, "module has no vermagic in .modinfo; the kernel refuses it unless force-loaded",
            hint="this is not a module built by kbuild; rebuild it against the running kernel's headers",
        )]
    module_release, module_flags = _split_vermagic(modmagic)
    findings = []
    if kernel.vermagic is None:
        findings.append(Finding(
            True, VERMAGIC,
            f"cannot check vermagic {modmagic!r}: {_judged(kernel)}'s is {kernel.vermagic_source}",
            hint=f"mount the host's /lib/modules/{kernel.release} or /boot so the loader can check; "
            "otherwise insmod decides",
            warning=True,
        ))
    else:
        kernel_flags = _split_vermagic(kernel.vermagic)[1]
        if module_flags == kernel_flags:
            findings.append(Finding(True, VERMAGIC, f"vermagic flags {module_flags.strip()!r} match"))
        else:
            findings.append(Finding(
                False, VERMAGIC,
                f"vermagic flags differ: module {module_flags.strip()!r}, "
                f"{_judged(kernel)} {kernel_flags.strip()!r} ({kernel.vermagic_source})",
                hint="the module was built for a differently configured kernel (SMP, preempt, modversions or "
                f"arch); use the artifact built for {kernel.release} or build one against its headers",
            ))
    findings.append(_release(info, kernel, module_release))
    return findings


def _split_vermagic(vermagic: str) -> Tuple[str, str]:
    """(release, flags): same_magic() compares from the first space on when the module has symbol versions."""
    cut = vermagic.find(" ")
    return (vermagic, "") if cut < 0 else (vermagic[:cut], vermagic[cut:])


def _release(info: ArtifactInfo, kernel: RunningKernel, module_release: str) -> Finding:
    if module_release == kernel.release:
        return Finding(True, KERNEL_RELEASE, f"built for {_judged(kernel)} {kernel.release}")
    if not info.has_modversions:
        return Finding(
            False, KERNEL_RELEASE,
            f"module is built for kernel {module_release}, {_judged(kernel)} is {kernel.release}, and without "
            "symbol versions (modversions) the kernel requires the exact release",
            hint=f"use the artifact built for {kernel.release}, or build one against its headers",
        )
    return _symbol_crcs(info, kernel, module_release)


def _symbol_crcs(info: ArtifactInfo, kernel: RunningKernel, module_release: str) -> Finding:
    built_for = f"module is built for kernel {module_release}, {_judged(kernel)} is {kernel.release}"
    symvers = kernel.symvers
    if not symvers:
        return Finding(
            True, SYMBOL_CRCS,
            f"{built_for}; it loads only if every imported symbol's CRC matches, and no Module.symvers is "
            "available to check them",
            hint=f"install the kernel headers for {kernel.release} so the loader can check, or use the artifact "
            f"built for {kernel.release}; otherwise insmod decides",
            warning=True,
        )
    mismatched = sorted(name for name, crc in info.symbol_crcs.items() if name in symvers and symvers[name] != crc)
    missing = sorted(name for name in info.symbol_crcs if name not in symvers)
    if mismatched:
        return Finding(
            False, SYMBOL_CRCS,
            f"{built_for}, and it disagrees about the version of {len(mismatched)} symbol(s): "
            f"{_some(mismatched)} (checked against {kernel.symvers_source})",
            hint=f"the kernel would refuse it; use the artifact built for {kernel.release} or build one "
            "against its headers",
        )
    if missing:
        return Finding(
            True, SYMBOL_CRCS,
            f"{built_for}; {len(missing)} imported symbol(s) are not in {kernel.symvers_source}: {_some(missing)}",
            hint="the kernel may refuse it with 'Unknown symbol in module'; prefer the artifact built for "
            f"{kernel.release}",
            warning=True,
        )
    return Finding(
        True, SYMBOL_CRCS,
        f"{built_for}; all {len(info.symbol_crcs)} imported symbol CRCs match {kernel.symvers_source}",
    )


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LISTED_SYMBOLS])
    return shown + (f" and {len(names) - _LISTED_SYMBOLS} more" if len(names) > _LISTED_SYMBOLS else "")


def _driver_version(info: ArtifactInfo, compatible: VersionRange) -> Finding:
    version = info.driver_version
    if not version:
        return Finding(
            False, DRIVER_VERSION, f"artifact carries no driver version; compatible versions are {compatible}",
            hint="this does not look like a Falco driver build",
        )
    if compatible.contains(version):
        return Finding(True, DRIVER_VERSION, f"driver version {version} is within {compatible}")
    return Finding(
        False, DRIVER_VERSION, f"driver version {version} is outside the compatible range {compatible}",
        hint=f"use a driver version in {compatible} (--driver-version)",
    )


def _interface_version(
    info: ArtifactInfo,
    code: str,
    have: Optional[Triplet],
    required: Union[str, Triplet, None],
    *,
    exact_minor: bool,
) -> List[Finding]:
    label = code.replace("_", " ")
    needed = _as_triplet(required, label)
    if info.kind == "ebpf" and (have is None or have == (0, 0, 0)):
        # libscap's load_api_versions refuses a probe whose section is missing or zero.
        return [Finding(
            False, code, f"probe has no {label} (section missing or zero); libscap refuses it",
            hint="this is not a complete Falco eBPF probe; download or build it again",
        )]
    if needed is None:
        return []
    if have is None:
        raw = info.modinfo.get(code)
        detail = f"has an unreadable {label} {raw!r}" if raw else f"has no {label}"
        return [Finding(
            False, code, f"module {detail}; Falco needs {format_triplet(needed)}",
            hint="this is not a Falco driver build; use an official driver artifact",
        )]
    rule = "same major and minor, patch >=" if exact_minor else "same major, minor.patch >="
    if interface_compatible(have, needed, exact_minor=exact_minor):
        return [Finding(True, code, f"{label} {format_triplet(have)} satisfies {format_triplet(needed)} ({rule})")]
    return [Finding(
        False, code,
        f"{label} {format_triplet(have)} does not satisfy Falco's {format_triplet(needed)} ({rule})",
        hint="use the driver version Falco was built with (falco --version shows it)",
    )]


def _as_triplet(value: Union[str, Triplet, None], label: str) -> Optional[Triplet]:
    if value is None or isinstance(value, tuple):
        return value
    parsed = parse_triplet(value)
    if parsed is None:
        raise UsageError(
            f"the required driver {label} {value!r} is not a version like 8.0.0",
            hint="check what `falco --version` reports, or the configured API/schema version",
        )
    return parsed


def _signature(info: ArtifactInfo, kernel: RunningKernel) -> Finding:
    enforcing = []
    if kernel.sig_enforce:
        enforcing.append("sig_enforce=Y")
    if kernel.lockdown in SIGNATURE_ENFORCING_LOCKDOWN:
        enforcing.append(f"lockdown={kernel.lockdown}")
    if not kernel.running:
        state = "signed" if info.signed else "unsigned"
        return Finding(True, SIGNATURE, f"module is {state}; kernel {kernel.release} is not the running kernel, so "
                       "whether it requires signatures is not checked", warning=not info.signed)
    if not kernel.enforces_signatures:
        state = "signed" if info.signed else "unsigned"
        return Finding(True, SIGNATURE, f"module is {state}; the kernel does not require signatures")
    if info.signed:
        sig = info.signature
        assert sig is not None
        return Finding(
            True, SIGNATURE,
            f"module is signed ({sig.id_type_name}); the kernel ({', '.join(enforcing)}) checks it against its keys",
            hint="if insmod says 'Key was rejected by service', enroll the signing key (e.g. with mokutil)",
        )
    return Finding(
        False, SIGNATURE,
        f"module is unsigned and the kernel requires signed modules ({', '.join(enforcing)})",
        hint="sign it with a key the kernel trusts (kernel sign-file, key enrolled with mokutil), "
        "or use the modern_ebpf driver",
    )


def _ebpf_kernel_version(info: ArtifactInfo, kernel: RunningKernel) -> Finding:
    if info.kernel_version is None:
        return Finding(
            False, EBPF_KERNEL_VERSION, "probe has no kernel_version section; libscap refuses it",
            hint="this is not a complete Falco eBPF probe; download or build it again",
        )
    if info.kernel_version == kernel.release:
        return Finding(True, EBPF_KERNEL_VERSION, f"probe is compiled for {_judged(kernel)} {kernel.release}")
    return Finding(
        False, EBPF_KERNEL_VERSION,
        f"probe is compiled for {info.kernel_version}, {_judged(kernel)} is {kernel.release}",
        hint=f"libscap requires an exact match; use the probe built for {kernel.release}",
    )
