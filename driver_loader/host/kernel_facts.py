"""What the running kernel will demand of a driver: module support, vermagic, signatures, symbol CRCs.

This is the file-reading edge for those facts. Every path goes through a root (the real /proc, /sys and `/`
by default; a host root such as /host inside a container; temporary directories in tests). Symlinks are
followed as a chroot would follow them, so a link under /host never leads back into the container, and every
read is bounded. The parsing helpers are pure and exported for tests.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Dict, Iterator, Mapping, Optional, Sequence, Tuple

from driver_loader.artifacts.elf import decompress, inspect_artifact, read_artifact
from driver_loader.core.errors import LoaderError
from driver_loader.core.kernel import RunningKernel
from driver_loader.core.naming import MODULE_SUFFIXES
from driver_loader.host.root import is_host_regular_file, read_host_file, resolve_in_root
from driver_loader.output.log import get_logger

log = get_logger(__name__)

_SMALL_FILE_LIMIT = 64 * 1024
_CONFIG_LIMIT = 16 * 1024 * 1024
_SYMVERS_LIMIT = 64 * 1024 * 1024
_IN_TREE_MODULE_LIMIT = 64 * 1024 * 1024
# Every in-tree module carries the same vermagic, so a handful of readable ones is plenty.
_MAX_MODULES_TRIED = 8
_MODULE_DIRS = ("lib/modules", "usr/lib/modules")
# include/linux/vermagic.h: MODULE_ARCH_VERMAGIC per architecture (x86_64 adds nothing).
_ARCH_VERMAGIC = {"x86_64": "", "aarch64": "aarch64"}
_CONFIG_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_LOCKDOWN_MODE = re.compile(r"\[([a-z_]+)\]")


class ModuleSymvers(Mapping[str, int]):
    """Module.symvers (plain or gzip) as symbol -> CRC, read on first lookup: it is MiBs and rarely needed.

    An unreadable or corrupt file reads as empty, which callers treat the same as "no symvers".
    """

    def __init__(self, root: str, path: str) -> None:
        self.root = root
        self.path = path
        self._crcs: Optional[Dict[str, int]] = None

    def _table(self) -> Dict[str, int]:
        if self._crcs is None:
            shown = _shown(self.root, self.path)
            raw = _read_bytes(self.root, self.path, _SYMVERS_LIMIT)
            try:
                text = decompress(raw, filename=shown, limit=_SYMVERS_LIMIT)
            except LoaderError as exc:
                log.warning("ignoring unreadable symbol versions file", path=shown, reason=exc.message)
                text = b""
            self._crcs = parse_symvers(text.decode("utf-8", "replace"))
        return self._crcs

    def __getitem__(self, symbol: str) -> int:
        return self._table()[symbol]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


def kernel_roots(host_root: str) -> Tuple[str, ...]:
    """Where to look for /lib/modules and /boot: the host root first (inside a container), then our own."""
    return tuple(dict.fromkeys((host_root or "/", "/")))


def read_running_kernel(
    release: str,
    arch: str,
    *,
    proc_root: str = "/proc",
    sys_root: str = "/sys",
    roots: Sequence[str] = ("/",),
    running: bool = True,
) -> RunningKernel:
    """Facts about kernel `release` on `arch`; /lib/modules, /usr/lib/modules and /boot are searched in `roots`.

    `running` says that `release` is the kernel running here, so /proc/config.gz describes it. Module support and
    the signature policy always come from the running kernel, the only one whose state can be read.
    """
    modules_supported = resolve_in_root(proc_root, "modules") is not None
    vermagic, vermagic_source = _running_vermagic(release, arch, proc_root if running else None, roots)
    sig_enforce = (_read_text(sys_root, "module/module/parameters/sig_enforce") or "").strip()
    lockdown = parse_lockdown(_read_text(sys_root, "kernel/security/lockdown") or "")
    symvers = _first_existing(
        roots,
        [f"{d}/{release}/build/Module.symvers" for d in _MODULE_DIRS]
        + [f"boot/symvers-{release}.gz"]
        + [f"{d}/{release}/symvers.gz" for d in _MODULE_DIRS],
    )
    kernel = RunningKernel(
        release=release,
        arch=arch,
        modules_supported=modules_supported,
        vermagic=vermagic,
        vermagic_source=vermagic_source,
        sig_enforce=sig_enforce == "Y",
        lockdown=lockdown,
        symvers=ModuleSymvers(*symvers) if symvers else None,
        symvers_source=_shown(*symvers) if symvers else None,
        running=running,
    )
    log.debug(
        "running kernel facts",
        release=release,
        modules=modules_supported,
        vermagic=vermagic,
        vermagic_source=vermagic_source,
        sig_enforce=kernel.sig_enforce,
        lockdown=lockdown,
        symvers=kernel.symvers_source,
    )
    return kernel


def _running_vermagic(
    release: str, arch: str, proc_root: Optional[str], roots: Sequence[str]
) -> Tuple[Optional[str], str]:
    for root in roots:
        for modules_dir in _MODULE_DIRS:
            found = _vermagic_of_in_tree_module(resolve_in_root(root, f"{modules_dir}/{release}/kernel"))
            if found:
                return found
    config = (proc_root and _first_existing((proc_root,), ["config.gz"])) or _first_existing(
        roots,
        [f"boot/config-{release}"]
        + [f"{d}/{release}/config" for d in _MODULE_DIRS]
        + [f"{d}/{release}/build/.config" for d in _MODULE_DIRS],
    )
    if config is None:
        return None, "unavailable: no in-tree module and no kernel config found"
    shown = _shown(*config)
    raw_config = _read_bytes(*config, _CONFIG_LIMIT)
    if not raw_config:
        return None, f"unavailable: cannot read {shown}"
    try:
        config_text = decompress(raw_config, filename=shown, limit=_CONFIG_LIMIT)
    except LoaderError as exc:
        return None, f"unavailable: cannot read {shown}: {exc.message}"
    vermagic = vermagic_from_config(release, arch, parse_kernel_config(config_text.decode("utf-8", "replace")))
    if vermagic is None:
        return None, f"unavailable: cannot be rebuilt from {shown} (randstruct seed or unknown arch {arch})"
    return vermagic, f"built from {shown}"


def _vermagic_of_in_tree_module(directory: Optional[str]) -> Optional[Tuple[str, str]]:
    """The vermagic of the first readable module below `directory` (already resolved inside its root)."""
    if directory is None or not os.path.isdir(directory):
        return None
    tried = 0
    # os.walk does not descend into symlinked directories, and symlinks and special files are skipped below, so
    # the walk stays inside the resolved directory and never blocks on a FIFO.
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for filename in sorted(filenames):
            path = os.path.join(dirpath, filename)
            if not filename.endswith(MODULE_SUFFIXES) or os.path.islink(path) or not os.path.isfile(path):
                continue
            tried += 1
            try:
                vermagic = inspect_artifact(read_artifact(path, limit=_IN_TREE_MODULE_LIMIT), filename=path).vermagic
            except LoaderError as exc:
                log.debug("skipping unreadable in-tree module", path=path, reason=exc.message)
                vermagic = None
            if vermagic:
                return vermagic, f"modinfo of {path}"
            if tried >= _MAX_MODULES_TRIED:
                return None
    return None


def parse_kernel_config(text: str) -> Dict[str, str]:
    """`CONFIG_X=value` lines of a kernel .config; `# CONFIG_X is not set` lines are simply absent."""
    config = {}
    for line in text.splitlines():
        match = _CONFIG_LINE.match(line.strip())
        if match:
            config[match[1]] = match[2].strip('"')
    return config


def vermagic_from_config(release: str, arch: str, config: Mapping[str, str]) -> Optional[str]:
    """VERMAGIC_STRING as include/linux/vermagic.h assembles it, or None when it cannot be known.

    With structure randomisation the string ends in a hash of the build's random seed, which no config has.
    """
    if "y" in (config.get("CONFIG_RANDSTRUCT"), config.get("CONFIG_GCC_PLUGIN_RANDSTRUCT")):
        return None
    if arch not in _ARCH_VERMAGIC:
        return None

    def enabled(name: str) -> bool:
        return config.get(name) == "y"

    parts = [release, " "]
    if enabled("CONFIG_SMP"):
        parts.append("SMP ")
    # Linux >= 5.16 keys "preempt " on CONFIG_PREEMPT_BUILD; older kernels on CONFIG_PREEMPT.
    if enabled("CONFIG_PREEMPT_BUILD") or enabled("CONFIG_PREEMPT"):
        parts.append("preempt ")
    elif enabled("CONFIG_PREEMPT_RT"):
        parts.append("preempt_rt ")
    if enabled("CONFIG_MODULE_UNLOAD"):
        parts.append("mod_unload ")
    if enabled("CONFIG_MODVERSIONS"):
        parts.append("modversions ")
    parts.append(_ARCH_VERMAGIC[arch])
    return "".join(parts)


def parse_lockdown(text: str) -> Optional[str]:
    """The active mode of /sys/kernel/security/lockdown, e.g. "none [integrity] confidentiality" -> integrity."""
    match = _LOCKDOWN_MODE.search(text)
    return match[1] if match else None


def parse_symvers(text: str) -> Dict[str, int]:
    """Module.symvers lines: `0xCRC<TAB>symbol<TAB>module<TAB>export type[<TAB>namespace]`."""
    crcs = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        try:
            crcs[fields[1]] = int(fields[0], 16) & 0xFFFFFFFF
        except ValueError:
            continue
    return crcs


def _first_existing(roots: Sequence[str], paths: Sequence[str]) -> Optional[Tuple[str, str]]:
    """(root, path) of the first regular file found, trying every path in a root before the next root."""
    for root in roots:
        for path in paths:
            if is_host_regular_file(root, path):
                return root, path
    return None


def _shown(root: str, path: str) -> str:
    return posixpath.join(root, path)


def _read_bytes(root: str, path: str, limit: int) -> bytes:
    """At most `limit` bytes of a regular file under `root`; empty when missing, unreadable or over the limit
    (every fact read here is optional)."""
    data = read_host_file(root, path, limit + 1) or b""
    if len(data) > limit:
        log.warning("ignoring oversized file", path=_shown(root, path), limit=limit)
        return b""
    return data


def _read_text(root: str, path: str) -> Optional[str]:
    data = _read_bytes(root, path, _SMALL_FILE_LIMIT)
    return data.decode("utf-8", "replace") if data else None
