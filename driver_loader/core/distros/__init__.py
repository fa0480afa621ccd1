"""Distro rules: one module per distro in this package, each defining `DISTRO`, an instance of a
`base.Distro` subclass. The registry below finds them all; nothing lists them by hand.

A new distro is one module (its os-release IDs, marker files, naming, legacy naming, the driver types it cannot run
and its kernel-headers recipe, in one class) and one row in tests/test_distros.py.
"""

from __future__ import annotations

import importlib
import os
from typing import Dict, List, Optional, Set, Tuple

from driver_loader.core.distros import generic, minikube
from driver_loader.core.distros.base import (
    Distro,
    DistroInitError,
    DistroTarget,
    HostFacts,
    Naming,
    generic_kernel_version,
    generic_legacy_naming,
)
from driver_loader.core.kernelrelease import KernelRelease, parse_kernel_release

UNDETERMINED = "undetermined"
GENERIC = generic.DISTRO
# The file whose content HostFacts carries as `version_file` (minikube's etc/VERSION).
VERSION_FILE = minikube.VERSION_FILE


def _module_names() -> List[str]:
    """The modules of this package: from its directory, or through pkgutil when the package is inside a zip file
    (the single-file build), which costs an import more at every start."""
    names: Set[str] = set()
    for directory in __path__:
        try:
            files = os.listdir(directory)
        except OSError:
            import pkgutil

            return sorted(module.name for module in pkgutil.iter_modules(__path__))
        names.update(name.split(".", 1)[0] for name in files if name.endswith((".py", ".pyc")) and name[0] != "_")
    return sorted(names)


def _find_distros() -> Tuple[Distro, ...]:
    """Every module of this package that defines DISTRO, in name order."""
    found = []
    for name in _module_names():
        module = importlib.import_module(f"{__name__}.{name}")
        distro = getattr(module, "DISTRO", None)
        if isinstance(distro, Distro):
            found.append(distro)
    return tuple(sorted(found, key=lambda d: d.name))


def _by_id(distros: Tuple[Distro, ...]) -> Dict[str, Distro]:
    registry: Dict[str, Distro] = {}
    for distro in distros:
        for os_id in distro.ids:
            if os_id in registry:
                raise ValueError(f"os-release ID {os_id!r} is claimed by {registry[os_id].name} and {distro.name}")
            registry[os_id] = distro
    return registry


DISTROS: Tuple[Distro, ...] = _find_distros()
REGISTRY: Dict[str, Distro] = _by_id(DISTROS)
_MARKED = sorted((d for d in DISTROS if d.markers), key=lambda d: (d.marker_priority, d.name))
# Marker files that identify a distro when os-release is missing or unusable, in the order they are tried.
MARKERS: Tuple[str, ...] = tuple(marker for distro in _MARKED for marker in distro.markers)
_BY_MARKER: Dict[str, Distro] = {marker: distro for distro in _MARKED for marker in distro.markers}


def discover(facts: HostFacts) -> DistroTarget:
    """Pick the rule for this host and compute the artifact naming, falcoctl's and the legacy loader's."""
    kr = parse_kernel_release(facts.kernel_release)
    notes: List[str] = []
    os_id = (facts.field("ID") or "").strip().lower() if facts.has_os_release else ""
    if os_id:
        rule = next((d for d in DISTROS if d.claims(facts)), None) or REGISTRY.get(os_id, GENERIC)
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
    return DistroTarget(rule=GENERIC.name, naming=undetermined, legacy=legacy_naming(facts), notes=tuple(notes))


def _target(rule: Distro, facts: HostFacts, kr: KernelRelease, notes: List[str]) -> DistroTarget:
    naming = rule.resolve(facts, kr)
    if not naming.target_id:
        raise DistroInitError("the os-release ID is empty")
    return DistroTarget(
        rule=rule.name,
        naming=naming,
        legacy=legacy_naming(facts),
        unsupported_types=rule.unsupported(facts, kr),
        notes=tuple(notes) + tuple(rule.notes(facts)),
    )


# The marker files the 0.36 bash loader looked at when there was no os-release, in the order it tried them.
_LEGACY_MARKERS: Tuple[str, ...] = tuple(marker for distro in _MARKED for marker in distro.legacy_markers)


def legacy_naming(facts: HostFacts) -> Optional[Naming]:
    """How the 0.36 bash loader named the artifact: os-release ID matched case-sensitively, marker files in the
    order debian, centos, rhel, and any etc/VERSION meaning minikube."""
    if facts.has_os_release:
        os_id = facts.field("ID") or ""
    else:
        marker = next((m for m in _LEGACY_MARKERS if m in facts.markers), None)
        if marker is None:
            return None
        os_id = _BY_MARKER[marker].ids[0]
    if facts.version_file is not None:
        if facts.minikube_version is None:
            return None  # the legacy loader exits here
        os_id = minikube.DISTRO.ids[0]
    if not os_id:
        return None
    rule = REGISTRY.get(os_id)
    naming = rule.legacy(facts) if rule is not None else None
    # Every other ID, including a differently-cased known one, got the generic treatment.
    return naming if naming is not None else generic_legacy_naming(os_id.lower(), facts)


def distro_for_target(target_id: str) -> Optional[Distro]:
    """The rule that produces artifact target `target_id` (ubuntu for ubuntu-aws), None for an unknown one."""
    return next((d for d in DISTROS if d.owns_target(target_id)), None)
