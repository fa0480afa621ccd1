"""The one way the loader reads a file into memory: a regular file only, at most a stated number of bytes.

A path given by an operator or found on disk may name a FIFO (opening it for reading would wait for a writer), a
device such as /dev/zero (it never ends) or a directory, or be a file far larger than what it claims to be. The
path is checked with stat before it is opened, so a device is never opened, and opened with O_NONBLOCK and checked
again with fstat, so a FIFO swapped in between cannot block; with `follow_symlinks=False` a symbolic link is refused
(O_NOFOLLOW) instead of followed. At most `limit` bytes are read (one more, to tell a file that is exactly at the
limit from one over it). Every refusal is an `UnreadableFile` whose message names the file and the reason.
"""

from __future__ import annotations

import errno as errno_codes
import os
import stat
from typing import Optional

READ_CHUNK = 1024 * 1024

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


class UnreadableFile(Exception):
    """`path` was not read. `reason` completes the sentence "<path> ..."; `errno` is set when the OS refused."""

    def __init__(self, path: str, reason: str, *, errno: Optional[int] = None, strerror: str = "") -> None:
        super().__init__(f"{path} {reason}")
        self.path = path
        self.reason = reason
        self.errno = errno
        self.strerror = strerror or reason

    @property
    def missing(self) -> bool:
        return self.errno in (errno_codes.ENOENT, errno_codes.ENOTDIR)


class NotRegularFile(UnreadableFile):
    """A FIFO, device, directory, socket or (without following links) a symbolic link; `mode` says which."""

    def __init__(self, path: str, mode: int) -> None:
        super().__init__(path, f"is {describe_mode(mode)}, not a regular file")
        self.mode = mode

    @property
    def symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


class FileTooLarge(UnreadableFile):
    """More than `limit` bytes."""

    def __init__(self, path: str, limit: int) -> None:
        super().__init__(path, f"is larger than {format_size(limit)}")
        self.limit = limit


def format_size(size: int) -> str:
    """`1 MiB`, `64 KiB` or `1000 bytes`: a limit, as the messages and the README state it."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def describe_mode(mode: int) -> str:
    """What a non-regular file is, in words: 'a FIFO', 'a character device', ..."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def open_regular(path: str, *, dir_fd: Optional[int] = None, follow_symlinks: bool = True) -> int:
    """A read-only descriptor on the regular file `path` (relative to `dir_fd` when given); the caller closes it."""
    try:
        before = os.stat(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
    except OSError as exc:
        raise _os_error(path, exc) from None
    _require_regular(path, before.st_mode)
    flags = _OPEN_FLAGS | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno_codes.ELOOP and not follow_symlinks:
            raise NotRegularFile(path, stat.S_IFLNK) from None
        raise _os_error(path, exc) from None
    try:
        _require_regular(path, os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_fd(fd: int, limit: int) -> bytes:
    """At most `limit` bytes from `fd`, reading until end of file or the limit, whichever comes first."""
    chunks = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_regular_file(path: str, limit: int, *, dir_fd: Optional[int] = None, follow_symlinks: bool = True) -> bytes:
    """The whole regular file `path`; UnreadableFile (NotRegularFile, FileTooLarge) when it cannot be that."""
    fd = open_regular(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
    try:
        if os.fstat(fd).st_size > limit:
            raise FileTooLarge(path, limit)
        data = read_fd(fd, limit + 1)
    except OSError as exc:
        raise _os_error(path, exc) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileTooLarge(path, limit)
    return data


def _require_regular(path: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotRegularFile(path, mode)


def _os_error(path: str, exc: OSError) -> UnreadableFile:
    strerror = exc.strerror or str(exc)
    return UnreadableFile(path, f"cannot be read: {strerror}", errno=exc.errno, strerror=strerror)
