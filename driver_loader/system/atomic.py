"""The one way the loader replaces a file: write a temp file beside the destination, fsync it, rename it over the
destination, fsync the directory. A reader sees the old file or the new one, never half of either, and on any
failure the temp file is removed and the destination is left as it was.

`AtomicFile` is the building block (the cache streams into one while hashing, and commits an artifact and its
metadata together); `write_atomically` and `symlink_atomically` are the whole job for one file or one link.
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional, Union

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_all(fd: int, data: Union[bytes, memoryview]) -> None:
    """os.write until every byte is written (a single write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def temp_name(name: str) -> str:
    """A hidden name beside `name` that no other writer picks."""
    return f".{name}.{os.urandom(6).hex()}.tmp"


def fsync_directory(directory: Union[str, int]) -> None:
    """Make a rename in `directory` (a path or an open directory fd) durable; best effort."""
    if isinstance(directory, int):
        with contextlib.suppress(OSError):
            os.fsync(directory)
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """A new file named `temp` in the directory open at `dir_fd`, that becomes `name` on `install()`.

    Created exclusively and without following symlinks, with exactly `mode` whatever the umask. Used as a context
    manager, it is discarded (closed and unlinked) when the block raises; after the block it must have been
    installed or it is discarded too. OSErrors are raised as they are, for the caller to word.
    """

    def __init__(self, dir_fd: int, name: str, *, mode: int, temp: Optional[str] = None) -> None:
        self.dir_fd = dir_fd
        self.name = name
        self.temp = temp or temp_name(name)
        self.installed = False
        self.fd: Optional[int] = os.open(self.temp, _TEMP_FLAGS, mode, dir_fd=dir_fd)
        try:
            os.fchmod(self.fd, mode)
        except BaseException:
            self.discard()
            raise

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.installed:
            self.discard()

    def write(self, data: Union[bytes, memoryview]) -> None:
        assert self.fd is not None, "write after finish"
        write_all(self.fd, data)

    def finish(self) -> None:
        """fsync and close: the content is on disk, under the temp name."""
        assert self.fd is not None, "finish twice"
        fd, self.fd = self.fd, None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def install(self) -> None:
        """Rename the finished temp file over `name` (the caller fsyncs the directory, once for all its renames)."""
        if self.fd is not None:
            self.finish()
        os.replace(self.temp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        self.installed = True

    def discard(self) -> None:
        """Close and remove the temp file; never raises."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if not self.installed:
            with contextlib.suppress(OSError):
                os.unlink(self.temp, dir_fd=self.dir_fd)


def write_atomically(path: str, data: bytes, *, mode: int) -> None:
    """Replace `path` with `data`: temp file beside it, fsync, rename, fsync the directory. On any failure the temp
    file is removed and `path` is left as it was; the OSError is raised."""
    directory = os.path.dirname(path) or "."
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with AtomicFile(dir_fd, os.path.basename(path), mode=mode) as temp:
            temp.write(data)
            temp.install()
        fsync_directory(dir_fd)
    finally:
        os.close(dir_fd)


def symlink_atomically(target: str, link: str) -> None:
    """Make `link` a symlink to `target`: made under a temp name beside it and renamed over whatever was at `link`,
    so nobody ever sees no link or a half-made one. On failure the temp link is removed; the OSError is raised."""
    directory = os.path.dirname(link) or "."
    temp = os.path.join(directory, temp_name(os.path.basename(link)))
    try:
        os.symlink(target, temp)
        os.replace(temp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_directory(directory)
