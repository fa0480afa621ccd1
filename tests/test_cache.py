import errno
import fcntl
import json
import os
import stat
import threading

import pytest
from download_helpers import sha256

from driver_loader.artifacts.cache import (
    META_SUFFIX,
    TEMP_PREFIX,
    ArtifactCache,
    ArtifactTooLarge,
    IncompleteDownload,
    UnsafeCachePathError,
    lock_file_name,
)
from driver_loader.core.errors import ExitCode, LoaderError, VerificationError
from driver_loader.system import atomic

pytest_plugins = ["download_fixtures"]

BODY = b"\x7fELF" + b"module" * 1000


@pytest.fixture
def root(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def cache(root):
    return ArtifactCache(str(root))


def artifact(root, version="8.0.0+driver", name="falco_x.ko"):
    return str(root / version / "x86_64" / name)


def store(cache, path, body=BODY, **kw):
    kw.setdefault("max_size", 1 << 20)
    kw.setdefault("verified_by", "none (recorded digest)")
    return cache.stream_into(path, [body[:100], body[100:]], **kw)


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def leftovers(directory):
    return sorted(n for n in os.listdir(directory) if not n.endswith(".lock")) if os.path.isdir(directory) else []


def test_stream_into_writes_file_and_metadata_atomically(cache, root):
    path = artifact(root)
    entry = store(cache, path, url="https://mirror.example/x", expected_size=len(BODY))
    assert read(path) == BODY
    assert entry.sha256 == sha256(BODY) and entry.size == len(BODY)
    meta = json.loads(read(path + META_SUFFIX))
    assert meta["sha256"] == sha256(BODY) and meta["size"] == len(BODY)
    assert meta["url"] == "https://mirror.example/x" and meta["verified_by"] == "none (recorded digest)"
    assert meta["created"].endswith("Z")
    assert leftovers(os.path.dirname(path)) == ["falco_x.ko", "falco_x.ko.meta.json"]


def test_files_are_0644_and_directories_0755_whatever_the_umask(cache, root):
    old = os.umask(0o077)
    try:
        path = artifact(root)
        store(cache, path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(path + META_SUFFIX).st_mode) == 0o644
    for directory in (root, root / "8.0.0+driver", root / "8.0.0+driver" / "x86_64"):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755


def test_lookup_returns_a_verified_entry(cache, root):
    path = artifact(root)
    store(cache, path, verified_by="sha256-sidecar")
    entry = ArtifactCache(str(root)).lookup(path)
    assert entry is not None and entry.verified_by == "sha256-sidecar" and entry.sha256 == sha256(BODY)


def test_lookup_of_a_missing_entry_creates_nothing(cache, root):
    assert cache.lookup(artifact(root)) is None
    assert not root.exists()


def test_tampered_entry_is_discarded_with_a_warning(cache, root, logs):
    path = artifact(root)
    store(cache, path)
    with open(path, "r+b") as handle:
        handle.seek(10)
        handle.write(b"EVIL")
    assert cache.lookup(path) is None
    assert "does not match its recorded digest" in logs()
    assert leftovers(os.path.dirname(path)) == []


def test_a_file_without_metadata_is_not_reused(cache, root):
    path = artifact(root)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as handle:
        handle.write(BODY)
    assert cache.lookup(path) is None


def test_corrupt_metadata_is_not_trusted(cache, root):
    path = artifact(root)
    store(cache, path)
    with open(path + META_SUFFIX, "w") as handle:
        handle.write('{"sha256": "not-a-digest"')
    assert cache.lookup(path) is None


def test_checksum_mismatch_keeps_nothing_and_leaves_the_old_entry(cache, root):
    path = artifact(root)
    store(cache, path)
    wrong = "0" * 64
    with pytest.raises(VerificationError) as info:
        store(cache, path, body=b"another file", expected_sha256=wrong, expectation_source="sidecar x.sha256")
    message = info.value.message
    assert wrong in message and sha256(b"another file") in message and "sidecar x.sha256" in message
    assert info.value.exit_code == ExitCode.VERIFICATION
    assert read(path) == BODY
    assert leftovers(os.path.dirname(path)) == ["falco_x.ko", "falco_x.ko.meta.json"]


def test_matching_checksum_is_accepted(cache, root):
    entry = store(cache, artifact(root), expected_sha256=sha256(BODY).upper(), verified_by="sha256-pinned")
    assert entry.verified_by == "sha256-pinned"


@pytest.mark.parametrize("kwargs, error", [
    ({"max_size": 50}, ArtifactTooLarge),
    ({"max_size": 1 << 20, "expected_size": 1 << 21}, ArtifactTooLarge),
    ({"expected_size": len(BODY) + 1}, IncompleteDownload),
])
def test_size_limits_and_truncation_keep_nothing(cache, root, kwargs, error):
    path = artifact(root)
    with pytest.raises(error):
        store(cache, path, **kwargs)
    assert leftovers(os.path.dirname(path)) == []


def test_a_failing_source_keeps_nothing(cache, root):
    path = artifact(root)

    def chunks():
        yield b"partial"
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        cache.stream_into(path, chunks(), max_size=1 << 20, verified_by="x")
    assert leftovers(os.path.dirname(path)) == []


def test_disk_full_is_a_clear_runtime_error_with_nothing_left(cache, root, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "write_all", full)
    path = artifact(root)
    with pytest.raises(LoaderError) as info:
        store(cache, path)
    assert info.value.exit_code == ExitCode.RUNTIME
    assert "no space left" in info.value.message
    assert "--cache-dir" in info.value.hint
    assert leftovers(os.path.dirname(path)) == []


def test_a_symlink_at_the_artifact_path_is_refused(cache, root, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = artifact(root)
    os.makedirs(os.path.dirname(path))
    os.symlink(victim, path)
    with pytest.raises(UnsafeCachePathError, match="symbolic link"):
        store(cache, path)
    with pytest.raises(UnsafeCachePathError):
        cache.lookup(path)
    assert victim.read_bytes() == b"precious"


def test_a_symlinked_directory_is_refused(cache, root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root.mkdir()
    os.symlink(elsewhere, root / "8.0.0+driver")
    with pytest.raises(UnsafeCachePathError, match="symbolic link"):
        store(cache, artifact(root))
    assert list(elsewhere.iterdir()) == []


def test_a_symlinked_metadata_file_is_refused(cache, root, tmp_path):
    path = artifact(root)
    store(cache, path)
    os.unlink(path + META_SUFFIX)
    fake = tmp_path / "fake.json"
    fake.write_text(json.dumps({"sha256": sha256(BODY), "size": len(BODY), "verified_by": "x", "created": "t"}))
    os.symlink(fake, path + META_SUFFIX)
    with pytest.raises(UnsafeCachePathError):
        cache.lookup(path)


@pytest.mark.parametrize("path", ["../outside.ko", "/etc/passwd", "8.0.0+driver/x86_64/.hidden", "a.ko.meta.json"])
def test_paths_outside_the_cache_or_reserved_names_are_refused(cache, path):
    with pytest.raises(UnsafeCachePathError):
        cache.lookup(path)


def test_store_file_copies_a_local_build(cache, root, tmp_path):
    built = tmp_path / "falco.ko"
    built.write_bytes(BODY)
    entry = cache.store_file(artifact(root), str(built), verified_by="local-build")
    assert entry.verified_by == "local-build" and entry.url is None
    assert cache.lookup(artifact(root)).sha256 == sha256(BODY)
    assert built.exists()


def test_remove_and_entries(cache, root):
    first, second = artifact(root, name="a.ko"), artifact(root, version="8.1.0+driver", name="b.ko")
    store(cache, first)
    store(cache, second, verified_by="sha256-pinned")
    assert [(e.path, e.verified_by) for e in cache.entries()] == [
        (first, "none (recorded digest)"), (second, "sha256-pinned")]
    cache.remove(first)
    assert [e.path for e in cache.entries()] == [second]
    assert not os.path.exists(first) and not os.path.exists(first + META_SUFFIX)


def test_stale_temp_files_of_dead_writers_are_cleaned(cache, root):
    path = artifact(root)
    directory = os.path.dirname(path)
    store(cache, path)
    abandoned = os.path.join(directory, f"{TEMP_PREFIX}999999-dead-falco_x.ko")
    abandoned_other = os.path.join(directory, f"{TEMP_PREFIX}999999-dead-other.ko.meta.json")
    for name in (abandoned, abandoned_other):
        open(name, "wb").close()
    with cache.lock(path):
        pass
    assert leftovers(directory) == ["falco_x.ko", "falco_x.ko.meta.json"]


def test_temp_files_of_a_live_writer_are_kept(cache, root):
    directory = os.path.dirname(artifact(root))
    busy = artifact(root, name="busy.ko")
    in_progress = os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}-cafe-busy.ko")
    holding, done = threading.Event(), threading.Event()

    def writer():
        with ArtifactCache(str(root)).lock(busy):
            holding.set()
            done.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(10)
        open(in_progress, "wb").close()
        with cache.lock(artifact(root)):
            pass
        assert os.path.exists(in_progress)
    finally:
        done.set()
        thread.join()


def test_the_lock_is_an_flock_other_processes_see(cache, root):
    path = artifact(root)
    store(cache, path)  # beside a stored artifact the lock file stays
    lock_file = os.path.join(os.path.dirname(path), lock_file_name(os.path.basename(path)))
    with cache.lock(path), open(lock_file) as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock_file) as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_lock_is_reentrant_within_one_cache(cache, root):
    path = artifact(root)
    with cache.lock(path), cache.lock(path):
        store(cache, path)
    assert cache.lookup(path) is not None
