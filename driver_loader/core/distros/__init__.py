"""Distro rules: one small module per distro, found by os-release ID in a registry.

A new distro is one module with `ID` and `resolve(facts, kr) -> Naming`, optionally `legacy(facts)` (how the 0.36
bash loader named its artifacts, when that differs), `unsupported(facts, kr)` (driver types it can never take),
`notes(facts)` (warnings to log) and `MARKER` (a file under the host root that identifies it without os-release),
plus a line in _RULES below.
"""

from __future__ import annotations

from types import ModuleType
from typing import Dict, Optional, Tuple

from driver_loader.core.distros import (
    amzn,
    bottlerocket,
    centos,
    cos,
    debian,
    flatcar,
    generic,
    minikube,
    ol,
    rhel,
    talos,
    ubuntu,
)
from driver_loader.core.distros.base import (
    MARKERS,
    DistroInitError,
    DistroTarget,
    HostFacts,
    Naming,
    generic_kernel_version,
    generic_legacy_naming,
)
from driver_loader.core.kernelrelease import parse_kernel_release

UNDETERMINED = "undetermined"

_RULES: Tuple[ModuleType, ...] = (amzn, bottlerocket, centos, cos, debian, flatcar, minikube, ol, rhel, talos, ubuntu)
REGISTRY: Dict[str, ModuleType] = {rule.ID: rule for rule in _RULES}
_BY_MARKER: Dict[str, ModuleType] = {rule.MARKER: rule for rule in _RULES if hasattr(rule, "MARKER")}


def discover(facts: HostFacts) -> DistroTarget:
    """Pick the rule for this host and compute the artifact naming, falcoctl's and the legacy loader's."""
    kr = parse_kernel_release(facts.kernel_release)
    notes = []
    os_id = (facts.field("ID") or "").strip().lower() if facts.has_os_release else ""
    if os_id:
        rule = minikube if facts.minikube_version else REGISTRY.get(os_id, generic)
        try:
            return _target(rule, facts, kr, notes)
        except DistroInitError as exc:
            notes.append(f"os-release says {os_id!r} but {exc}; trying marker files")
    elif facts.has_os_release:
        notes.append("os-release has no ID; trying marker files")

    # Without a usable os-release, marker files decide, in a fixed order (falcoctl's order is random).
    marker_facts = HostFacts(facts.kernel_release, facts.kernel_version, facts.arch, {}, False, facts.markers,
                             facts.version_file)
    for marker in MARKERS:
        if marker in facts.markers:
            try:
                return _target(_BY_MARKER[marker], marker_facts, kr, notes)
            except DistroInitError as exc:
                notes.append(str(exc))
    notes.append("no os-release and no marker file identifies the distro")
    undetermined = Naming(UNDETERMINED, str(kr) or facts.kernel_release, generic_kernel_version(facts.kernel_version))
    return DistroTarget(rule="generic", naming=undetermined, legacy=legacy_naming(facts), notes=tuple(notes))


def _target(rule: ModuleType, facts: HostFacts, kr, notes: list) -> DistroTarget:
    naming = rule.resolve(facts, kr)
    if not naming.target_id:
        raise DistroInitError("the os-release ID is empty")
    unsupported = rule.unsupported(facts, kr) if hasattr(rule, "unsupported") else frozenset()
    extra = rule.notes(facts) if hasattr(rule, "notes") else ()
    return DistroTarget(
        rule=rule.ID,
        naming=naming,
        legacy=legacy_naming(facts),
        unsupported_types=unsupported,
        notes=tuple(notes) + tuple(extra),
    )


def legacy_naming(facts: HostFacts) -> Optional[Naming]:
    """How the 0.36 bash loader named the artifact: os-release ID matched case-sensitively, marker files in the
    order debian, centos, rhel, and any etc/VERSION meaning minikube."""
    if facts.has_os_release:
        os_id = facts.field("ID") or ""
    elif "etc/debian_version" in facts.markers:
        os_id = "debian"
    elif "etc/centos-release" in facts.markers:
        os_id = "centos"
    elif "etc/redhat-release" in facts.markers:
        os_id = "rhel"
    else:
        return None
    if facts.version_file is not None:
        if facts.minikube_version is None:
            return None  # the legacy loader exits here
        os_id = "minikube"
    if not os_id:
        return None
    rule = REGISTRY.get(os_id)
    if rule is not None and hasattr(rule, "legacy"):
        return rule.legacy(facts)
    # Every other ID, including a differently-cased known one, got the generic treatment.
    return generic_legacy_naming(os_id.lower(), facts)
