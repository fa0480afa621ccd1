"""Reading the host: the only module that looks at uname and at files under the host root.

Everything is read through the host-root seam, chroot-style: an absolute symlink inside the host root points into
the host root, never out of it. Reads are bounded and refuse anything but regular files, so an os-release that
links to /dev/zero or a FIFO cannot hang us.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from typing import Dict, Optional, Tuple

from driver_loader.core.distros import MARKERS, VERSION_FILE
from driver_loader.core.distros.base import HostFacts
from driver_loader.core.errors import UsageError
from driver_loader.core.os_release import parse_os_release as parse_os_release_text
from driver_loader.core.settings import Settings, normalize_arch
from driver_loader.output.log import get_logger
from driver_loader.system.files import NotRegularFile, UnreadableFile, open_regular, read_fd

READ_LIMIT = 64 * 1024
_MAX_SYMLINKS = 40

log = get_logger()


def resolve_in_root(host_root: str, relpath: str) -> Optional[str]:
    """The real path of `relpath` inside `host_root`, following symlinks as if host_root were /.
    None when a component is missing or the link chain is too long."""
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    resolved: list = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = posixpath.join(host_root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_SYMLINKS:
                return None
            try:
                target = os.readlink(candidate)
            except OSError:
                return None
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return posixpath.join(host_root, *resolved)


def read_host_file(host_root: str, relpath: str, limit: int = READ_LIMIT) -> Optional[bytes]:
    """At most `limit` bytes of a regular file under the host root; None if it is missing or not a regular file."""
    path = resolve_in_root(host_root, relpath)
    if path is None:
        return None
    try:
        fd = open_regular(path, follow_symlinks=False)
    except NotRegularFile:
        log.warning("ignoring a host file that is not a regular file", path=path)
        return None
    except UnreadableFile as exc:
        if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EACCES, errno.ENXIO):
            log.debug("cannot open host file", path=path, error=exc.reason)
        return None
    try:
        return read_fd(fd, limit)
    except OSError as exc:
        log.debug("cannot read host file", path=path, error=str(exc))
        return None
    finally:
        os.close(fd)


def is_host_regular_file(host_root: str, relpath: str) -> bool:
    path = resolve_in_root(host_root, relpath)
    if path is None:
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def parse_os_release(content: bytes) -> Dict[str, str]:
    """os-release fields (keys upper-cased), by core.os_release's parser. Bytes that are not UTF-8 (and NULs)
    become U+FFFD so they can never pass the naming checks; lines that cannot be read are skipped with a warning."""
    text = content.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    parsed = parse_os_release_text(text)
    if parsed.problems:
        log.warning("os-release has lines that could not be read; they were skipped", problems=list(parsed.problems))
    return parsed.fields


def kernel_facts(settings: Settings) -> Tuple[str, str, str]:
    """Release, version and arch: from the overrides where given, else from uname."""
    uname = os.uname()
    release = settings.kernel_release if settings.kernel_release is not None else uname.release
    version = settings.kernel_version if settings.kernel_version is not None else uname.version
    arch = settings.arch
    if arch is None:
        try:
            arch = normalize_arch(uname.machine)
        except UsageError:
            arch = uname.machine  # no prebuilt drivers for it, but naming and local builds still work
    return release, version, arch


def read_host_facts(settings: Settings) -> HostFacts:
    release, version, arch = kernel_facts(settings)
    root = settings.host_root
    raw = read_host_file(root, "etc/os-release")
    if raw is None:
        raw = read_host_file(root, "usr/lib/os-release")
    os_release = parse_os_release(raw) if raw is not None else {}
    markers = frozenset(m for m in MARKERS if is_host_regular_file(root, m))
    version_bytes = read_host_file(root, VERSION_FILE) if VERSION_FILE in markers else None
    if raw is None and root != "/":
        log.warning(
            f"the host's /etc is not mounted at {posixpath.join(root, 'etc')}: no os-release found there",
            hint="mount the host's /etc (e.g. -v /etc:/host/etc:ro) or fix --host-root; detection falls back",
        )
    return HostFacts(
        kernel_release=release,
        kernel_version=version,
        arch=arch,
        os_release=os_release,
        has_os_release=raw is not None,
        markers=markers,
        version_file=version_bytes.decode("utf-8", errors="replace") if version_bytes is not None else None,
    )
