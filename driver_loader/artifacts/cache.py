"""The artifact cache: the only module that writes downloaded or built drivers to disk.

Layout: `<root>/<driver version>/<arch>/<file>`, with `<file>.meta.json` beside each artifact recording its
sha256, size, source and how it was verified. Writes go to a temp file in the same directory, are hashed as the
bytes arrive, fsync'd and renamed into place, so a reader sees a whole verified file or nothing. Every directory
below the root is opened with O_NOFOLLOW, so a planted symlink is refused rather than followed out of the cache.
A per-artifact flock serialises loaders on one host: the first downloads, the others wait and reuse its result.
Writers always hold the artifact's lock, so a temp file whose artifact lock is free belongs to a dead writer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import secrets
import stat
import threading
from datetime import datetime, timezone
from typing import Callable, ContextManager, Dict, Iterable, Iterator, Optional, Protocol, Tuple

from driver_loader.core.errors import LoaderError, VerificationError
from driver_loader.core.policy import ChecksumRecord, Evidence
from driver_loader.output.log import get_logger
from driver_loader.system.atomic import AtomicFile
from driver_loader.system.documents import DocumentLimitError, load_json
from driver_loader.system.files import NotRegularFile, UnreadableFile, read_regular_file

log = get_logger(__name__)

TEMP_PREFIX = ".partial-"
META_SUFFIX = ".meta.json"
LOCK_SUFFIX = ".lock"
FILE_MODE = 0o644
DIR_MODE = 0o755
_READ_CHUNK = 1024 * 1024
_META_LIMIT = 64 * 1024
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_LOCK_ATTEMPTS = 100

Progress = Callable[[int, Optional[int]], None]
# Called with the digest of the bytes written, before they are stored: returns the id of the key whose signature
# over them it verified, or raises VerificationError, and nothing is stored.
Vouch = Callable[[str], str]


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    path: str
    sha256: str
    size: int
    url: Optional[str]
    verified_by: str
    created: str
    signed_by: str = ""  # the id of the key whose signature was verified before the entry was stored

    @property
    def record(self) -> ChecksumRecord:
        """What the policy judges: the digest, and how it was checked when stored (an unknown record counts as
        only recorded)."""
        return ChecksumRecord(self.sha256, Evidence.parse(self.verified_by) or Evidence.RECORDED, self.url or "",
                              signed_by=self.signed_by)


class UnsafeCachePathError(LoaderError):
    """A symlink or other non-regular object where the cache expects its own files and directories."""


class IncompleteDownload(LoaderError):
    """The body ended before the announced Content-Length."""


class ArtifactTooLarge(LoaderError):
    """The artifact is bigger than the configured maximum size."""


class Cache(Protocol):
    """What the install pipeline, the fetcher and the builder use of the cache. ArtifactCache is the real one;
    tests pass fakes."""

    def lock(self, path: str) -> ContextManager[None]: ...

    def lookup(self, path: str, *, discard: bool = True) -> Optional[CacheEntry]: ...

    def stream_into(self, path: str, chunks: Iterable[bytes], *, max_size: int, verified_by: str,
                    expected_size: Optional[int] = None, expected_sha256: Optional[str] = None,
                    expectation_source: str = "", url: Optional[str] = None,
                    progress: Optional[Progress] = None, signed_by: str = "",
                    vouch: Optional[Vouch] = None) -> CacheEntry: ...

    def store_file(self, path: str, source_file: str, *, verified_by: str, url: Optional[str] = None,
                   expected_sha256: Optional[str] = None) -> CacheEntry: ...

    def remove(self, path: str) -> None: ...


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def lock_file_name(name: str) -> str:
    """The artifact's lock file: hidden, beside it. It stays beside a stored artifact; when nothing was stored,
    its holder removes it on release (see ArtifactCache._exclusive for why that is safe)."""
    return f".{name}{LOCK_SUFFIX}"


def _temp_name(name: str) -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}"


def _artifact_of_temp(temp: str) -> Optional[str]:
    """`.partial-<pid>-<token>-<name>[.meta.json]` -> name: the artifact whose lock guards the temp file."""
    parts = temp[len(TEMP_PREFIX):].split("-", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    name = parts[2]
    return name[: -len(META_SUFFIX)] if name.endswith(META_SUFFIX) else name


class ArtifactCache:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._held: Dict[Tuple[str, int], int] = {}
        self._held_guard = threading.Lock()

    # -- public API -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, path: str) -> Iterator[None]:
        """Hold the artifact's lock; re-entrant within one thread of one ArtifactCache."""
        key = (self._normalize(path), threading.get_ident())
        with self._held_guard:
            depth = self._held.get(key, 0)
            self._held[key] = depth + 1
        try:
            if depth:
                yield
                return
            with self._exclusive(path):
                yield
        finally:
            with self._held_guard:
                if self._held[key] > 1:
                    self._held[key] -= 1
                else:
                    del self._held[key]

    @contextlib.contextmanager
    def _exclusive(self, path: str) -> Iterator[None]:
        """Hold the artifact's flock, creating its directories as needed. On release, when no artifact was stored
        there, the lock file and the artifact's directories, as far up as they are empty, are removed: trying an
        artifact that is not published leaves nothing behind. Since a holder may unlink its lock file and remove
        directories, a loader that waited for the lock checks that it holds the file still at that name, and one
        whose directory vanished under it starts again."""
        for _attempt in range(_LOCK_ATTEMPTS):
            tidy = False
            try:
                with self._directory(path, create=True) as located:
                    lock_fd = self._take_lock(located, path) if located is not None else -1
                    if lock_fd < 0:
                        continue  # another loader removed the directory or the lock file meanwhile
                    dir_fd, name = located
                    try:
                        self._remove_stale_temps(dir_fd, name)
                        yield
                    finally:
                        tidy = not self._exists(dir_fd, name)
                        if tidy:
                            with contextlib.suppress(OSError):
                                os.unlink(lock_file_name(name), dir_fd=dir_fd)
                        os.close(lock_fd)
            finally:
                if tidy:
                    self._remove_empty_directories(self._split(path)[0])
            return
        raise LoaderError(f"cannot lock {path} in the driver cache: its directory keeps disappearing",
                          hint="another process keeps removing it; run again")

    def _take_lock(self, located: Tuple[int, str], path: str) -> int:
        """The flocked descriptor of the artifact's lock file, or -1 when the directory or the lock file went
        away before the lock was ours."""
        dir_fd, name = located
        lock_name = lock_file_name(name)
        try:
            lock_fd = self._open(dir_fd, lock_name, os.O_RDWR | os.O_CREAT, path, vanished_ok=True)
        except FileNotFoundError:
            return -1  # another loader removed the (empty) directory after we opened it
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another loader working on the same artifact", path=path)
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                current = os.stat(lock_name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            held = os.fstat(lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise
        if current is None or (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
            os.close(lock_fd)
            return -1
        return lock_fd

    @staticmethod
    def _exists(dir_fd: int, name: str) -> bool:
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def _remove_empty_directories(self, dirs: Tuple[str, ...]) -> None:
        """Remove the artifact's directories below the root, deepest first, while they are empty."""
        for parts in (dirs[:depth] for depth in range(len(dirs), 0, -1)):
            try:
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                return
            try:
                for part in parts[:-1]:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    os.close(fd)
                    fd = child
                os.rmdir(parts[-1], dir_fd=fd)
            except OSError:
                return  # not empty (another artifact, another loader) or already gone: leave it
            finally:
                os.close(fd)

    def lookup(self, path: str, *, discard: bool = True) -> Optional[CacheEntry]:
        """The entry at `path` if its file still hashes to the recorded digest; a tampered entry is discarded
        (only skipped with discard=False, for commands that change nothing)."""
        with self._directory(path, create=False) as located:
            if located is None:
                return None
            dir_fd, name = located
            if not self._regular_file_exists(dir_fd, name, path):
                return None
            meta = self._read_meta(dir_fd, name, path)
            if meta is None:
                return None
            sha256, size = self._hash_file(dir_fd, name, path, meta["size"])
            if sha256 != meta["sha256"] or size != meta["size"]:
                log.warning("cached artifact does not match its recorded digest"
                            + ("; discarding it" if discard else ""),
                            path=path, expected=meta["sha256"], actual=sha256)
                if discard:
                    self._unlink(dir_fd, name + META_SUFFIX, path)
                    self._unlink(dir_fd, name, path)
                return None
            return CacheEntry(path=self._normalize(path), sha256=sha256, size=size, url=meta.get("url"),
                              verified_by=meta["verified_by"], created=meta["created"],
                              signed_by=meta.get("signed_by", ""))

    def stream_into(
        self,
        path: str,
        chunks: Iterable[bytes],
        *,
        max_size: int,
        verified_by: str,
        expected_size: Optional[int] = None,
        expected_sha256: Optional[str] = None,
        expectation_source: str = "",
        url: Optional[str] = None,
        progress: Optional[Progress] = None,
        signed_by: str = "",
        vouch: Optional[Vouch] = None,
    ) -> CacheEntry:
        """Write `chunks` to `path` atomically, hashing as they arrive. With `expected_sha256`, a mismatch
        raises VerificationError and leaves the cache as it was; so does `vouch` refusing the digest.
        `signed_by` records a signature verified before the bytes came."""
        if expected_size is not None and expected_size > max_size:
            raise ArtifactTooLarge(f"artifact is {expected_size} bytes, more than the maximum of {max_size}",
                                   hint="raise --max-size if this size is expected")
        with self.lock(path), self._directory(path, create=True) as (dir_fd, name):
            self._regular_file_exists(dir_fd, name, path)  # refuses a symlink planted at the final path
            temp = self._new_temp(dir_fd, name, path)
            try:
                sha256, size = self._write_chunks(temp, chunks, max_size, expected_size, progress, path)
                if expected_sha256 and sha256 != expected_sha256.lower():
                    raise VerificationError(
                        f"checksum mismatch for {name}: expected {expected_sha256.lower()} "
                        f"({expectation_source or 'given'}), got {sha256}",
                        hint="the repository served a different file than its checksum describes; "
                             "nothing was kept",
                    )
                if vouch is not None:
                    signed_by = vouch(sha256)
                created = _now()
                meta = {"sha256": sha256, "size": size, "url": url, "verified_by": verified_by, "created": created}
                if signed_by:
                    meta["signed_by"] = signed_by
                self._commit(dir_fd, temp, name, meta, path)
            finally:
                temp.discard()  # closes and removes the temp file unless it was installed
            return CacheEntry(path=self._normalize(path), sha256=sha256, size=size, url=url,
                              verified_by=verified_by, created=created, signed_by=signed_by)

    def store_file(self, path: str, source_file: str, *, verified_by: str, url: Optional[str] = None,
                   expected_sha256: Optional[str] = None) -> CacheEntry:
        """Atomically copy a finished local file (e.g. a local build) into the cache."""
        try:
            source = open(source_file, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise LoaderError(f"cannot read {source_file}: {exc.strerror or exc}") from None
        with source:
            size = os.fstat(source.fileno()).st_size
            return self.stream_into(path, iter(lambda: source.read(_READ_CHUNK), b""), max_size=size,
                                    expected_size=size, verified_by=verified_by, url=url,
                                    expected_sha256=expected_sha256, expectation_source="expected digest")

    def remove(self, path: str) -> None:
        with self._directory(path, create=False) as located:
            if located is None:
                return
            dir_fd, name = located
            self._unlink(dir_fd, name + META_SUFFIX, path)
            self._unlink(dir_fd, name, path)

    def entries(self) -> Iterator[CacheEntry]:
        """Recorded entries, from their metadata (not re-hashed; `lookup` verifies one before use)."""
        if not os.path.isdir(self.root):
            return
        for directory, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames.sort()
            for filename in sorted(filenames):
                if not filename.endswith(META_SUFFIX) or filename.startswith("."):
                    continue
                artifact = os.path.join(directory, filename[: -len(META_SUFFIX)])
                meta = _load_meta(os.path.join(directory, filename), artifact)
                if meta is not None and os.path.isfile(artifact) and not os.path.islink(artifact):
                    yield CacheEntry(path=artifact, sha256=meta["sha256"], size=meta["size"], url=meta.get("url"),
                                     verified_by=meta["verified_by"], created=meta["created"],
                                     signed_by=meta.get("signed_by", ""))

    # -- paths and directories --------------------------------------------------------------------------------

    def _normalize(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.root, path))

    def _split(self, path: str) -> Tuple[Tuple[str, ...], str]:
        normalized = self._normalize(path)
        relative = os.path.relpath(normalized, self.root)
        parts = tuple(relative.split(os.sep))
        name = parts[-1]
        if relative == "." or parts[0] == ".." or name.startswith(".") or name.endswith(META_SUFFIX):
            raise UnsafeCachePathError(f"refusing cache path {path!r}: it is not an artifact inside {self.root}")
        return parts[:-1], name

    @contextlib.contextmanager
    def _directory(self, path: str, *, create: bool):
        """Yields (directory fd, file name) for `path`, walking down from the root without following symlinks;
        yields None when a directory is missing and `create` is False, or was removed while walking."""
        dirs, name = self._split(path)
        if create:
            self._make_root()
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if create:
                raise
            yield None
            return
        except OSError as exc:
            raise self._os_failure(exc, path) from None
        try:
            for part in dirs:
                parent, fd = fd, -1  # _descend closes the parent, even when it raises
                fd = self._descend(parent, part, create, path)
                if fd < 0:
                    break
            if fd < 0:
                yield None
            else:
                yield fd, name
        finally:
            if fd >= 0:
                os.close(fd)

    def _descend(self, parent: int, part: str, create: bool, path: str) -> int:
        """Open `part` below `parent` (closing `parent`); -1 when missing and not creating, or when `parent` itself
        was removed meanwhile."""
        try:
            created = False
            if create:
                try:
                    os.mkdir(part, DIR_MODE, dir_fd=parent)
                    created = True
                except FileExistsError:
                    pass
                except FileNotFoundError:
                    return -1  # another loader removed the (empty) parent after we opened it
            try:
                info = os.stat(part, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                return -1
            if stat.S_ISLNK(info.st_mode):
                raise UnsafeCachePathError(
                    f"refusing cache path {path}: directory {part!r} is a symbolic link",
                    hint=f"remove it; {self.root} must hold only real directories and files",
                )
            if not stat.S_ISDIR(info.st_mode):
                raise UnsafeCachePathError(f"refusing cache path {path}: {part!r} is not a directory",
                                           hint=f"remove it from {self.root}")
            try:
                fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            except FileNotFoundError:
                return -1  # removed between the stat and the open
            if created:
                try:
                    os.fchmod(fd, DIR_MODE)  # whatever the umask
                except OSError:
                    os.close(fd)
                    raise
            return fd
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeCachePathError(f"refusing cache path {path}: {part!r} is a symbolic link") from None
            raise self._os_failure(exc, path) from None
        finally:
            os.close(parent)

    def _make_root(self) -> None:
        if os.path.isdir(self.root):
            return
        try:
            os.makedirs(self.root, DIR_MODE, exist_ok=True)
            os.chmod(self.root, DIR_MODE)
        except OSError as exc:
            raise self._os_failure(exc, self.root) from None

    def _open(self, dir_fd: int, name: str, flags: int, path: str, *, vanished_ok: bool = False) -> int:
        """os.open below `dir_fd`, never through a symlink; with `vanished_ok`, FileNotFoundError passes through."""
        try:
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=dir_fd)
        except OSError as exc:
            if vanished_ok and exc.errno == errno.ENOENT:
                raise
            if exc.errno == errno.ELOOP:
                raise UnsafeCachePathError(f"refusing cache path {path}: {name!r} is a symbolic link",
                                           hint="remove the link; nothing was written through it") from None
            raise self._os_failure(exc, path) from None

    def _regular_file_exists(self, dir_fd: int, name: str, path: str) -> bool:
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(info.st_mode):
            raise UnsafeCachePathError(f"refusing cache path {path}: it is a symbolic link",
                                       hint="remove the link; nothing was read or written through it")
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeCachePathError(f"refusing cache path {path}: it is not a regular file",
                                       hint="remove it")
        return True

    def _unlink(self, dir_fd: int, name: str, path: str, *, quiet: bool = False) -> None:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if not quiet:
                raise self._os_failure(exc, path) from None

    def _io(self, path: str, operation: Callable, *args) -> None:
        try:
            operation(*args)
        except OSError as exc:
            raise self._os_failure(exc, path) from None

    def _os_failure(self, exc: OSError, path: str) -> LoaderError:
        if exc.errno in _DISK_FULL:
            return LoaderError(f"no space left on the device holding the driver cache ({self.root}) "
                               f"while writing {path}; nothing was kept",
                               hint="free some space, or point --cache-dir at a larger filesystem")
        return LoaderError(f"cannot use the driver cache at {self.root} ({path}): {exc.strerror or exc}",
                           hint="check permissions and free space, or point --cache-dir elsewhere")

    # -- locking ------------------------------------------------------------------------------------------------

    def _remove_stale_temps(self, dir_fd: int, locked_name: str) -> None:
        """Remove temp files whose artifact lock nobody holds: their writer is gone (e.g. killed). Called right
        after taking `locked_name`'s lock, before writing, so its own temp files are stale too."""
        for temp in os.listdir(dir_fd):
            artifact = _artifact_of_temp(temp) if temp.startswith(TEMP_PREFIX) else None
            if artifact is None or (artifact != locked_name and not self._lock_is_free(dir_fd, artifact)):
                continue
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
                log.debug("removed an abandoned partial download", file=temp)

    @staticmethod
    def _lock_is_free(dir_fd: int, artifact: str) -> bool:
        try:
            fd = os.open(lock_file_name(artifact), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    # -- file contents ------------------------------------------------------------------------------------------

    def _new_temp(self, dir_fd: int, name: str, path: str) -> AtomicFile:
        """The temp file an artifact (or its metadata) is written to, named so a dead writer's can be found."""
        try:
            return AtomicFile(dir_fd, name, mode=FILE_MODE, temp=_temp_name(name))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeCachePathError(f"refusing cache path {path}: its temp file is a symbolic link",
                                           hint="remove the link; nothing was written through it") from None
            raise self._os_failure(exc, path) from None

    def _write_chunks(self, temp: AtomicFile, chunks: Iterable[bytes], max_size: int, expected_size: Optional[int],
                      progress: Optional[Progress], path: str) -> Tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        # Only our own writes are wrapped: an OSError raised by the source (a broken connection) is not the cache's.
        for chunk in chunks:
            size += len(chunk)
            if size > max_size:
                raise ArtifactTooLarge(f"artifact is larger than the maximum of {max_size} bytes",
                                       hint="raise --max-size if this size is expected")
            digest.update(chunk)
            self._io(path, temp.write, chunk)
            if progress is not None:
                progress(size, expected_size)
        self._io(path, temp.finish)
        if expected_size is not None and size != expected_size:
            raise IncompleteDownload(f"transfer ended after {size} of {expected_size} bytes")
        return digest.hexdigest(), size

    def _commit(self, dir_fd: int, temp: AtomicFile, name: str, meta: dict, path: str) -> None:
        """Rename the verified temp file into place, then its metadata. The old metadata goes first, so a crash
        in between leaves a file without metadata, which is never reused."""
        with self._new_temp(dir_fd, name + META_SUFFIX, path) as meta_temp:
            try:
                meta_temp.write(json.dumps(meta, indent=2, sort_keys=True).encode() + b"\n")
                meta_temp.finish()
                self._unlink(dir_fd, name + META_SUFFIX, path)
                temp.install()
                meta_temp.install()
                os.fsync(dir_fd)
            except OSError as exc:
                raise self._os_failure(exc, path) from None

    def _read_meta(self, dir_fd: int, name: str, path: str) -> Optional[dict]:
        """The artifact's metadata; None, with a warning when it exists, when it cannot be used."""
        try:
            return _load_meta(name + META_SUFFIX, path, dir_fd=dir_fd)
        except _SymlinkedMeta:
            raise UnsafeCachePathError(f"refusing cache path {path}: {name + META_SUFFIX!r} is a symbolic link",
                                       hint="remove the link; nothing was read or written through it") from None

    def _hash_file(self, dir_fd: int, name: str, path: str, expected_size: int) -> Tuple[str, int]:
        """Digest and size of the artifact, reading at most one byte more than its recorded size: a file that
        grew is already a mismatch, however large it has become."""
        fd = self._open(dir_fd, name, os.O_RDONLY, path)
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "rb") as handle:
            while size <= expected_size:
                block = handle.read(min(_READ_CHUNK, expected_size + 1 - size))
                if not block:
                    break
                digest.update(block)
                size += len(block)
        return (digest.hexdigest() if size <= expected_size else "not hashed: larger than recorded"), size


class _SymlinkedMeta(Exception):
    pass


def _load_meta(meta_path: str, shown: str, *, dir_fd: Optional[int] = None) -> Optional[dict]:
    """The validated metadata at `meta_path` (relative to `dir_fd` when given): None when there is none, and
    None with a warning naming the entry when it cannot be used (not a regular file, too large, not valid or
    too deeply nested JSON, fields missing). Such an entry is skipped, never reused."""
    try:
        raw = read_regular_file(meta_path, _META_LIMIT, dir_fd=dir_fd, follow_symlinks=False)
    except UnreadableFile as exc:
        if exc.missing:
            log.debug("cached file has no metadata; not reusing it", path=shown)
            return None
        if isinstance(exc, NotRegularFile) and exc.symlink and dir_fd is not None:
            raise _SymlinkedMeta() from None
        reason = exc.reason
    else:
        try:
            return _parse_meta(raw)
        except ValueError as exc:
            reason = str(exc)
    log.warning("skipping a cache entry: its metadata cannot be used; it will not be reused", path=shown,
                reason=f"{META_SUFFIX} {reason}")
    return None


def _parse_meta(raw: bytes) -> dict:
    """Validated metadata; ValueError saying what is wrong with it otherwise."""
    try:
        meta = load_json(raw.decode())
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8") from None
    except DocumentLimitError as exc:
        raise ValueError(f"is refused: {exc}") from None
    except ValueError:
        raise ValueError("is not valid JSON") from None
    if not isinstance(meta, dict):
        raise ValueError("is not a JSON object")
    sha256, size = meta.get("sha256"), meta.get("size")
    if not (isinstance(sha256, str) and len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256)):
        raise ValueError("has no valid sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("has no valid size")
    if not isinstance(meta.get("verified_by"), str) or not isinstance(meta.get("created"), str):
        raise ValueError("has no valid verified_by or created")
    if meta.get("url") is not None and not isinstance(meta.get("url"), str):
        raise ValueError("has an invalid url")
    if not isinstance(meta.get("signed_by", ""), str):
        raise ValueError("has an invalid signed_by")
    return meta
