"""Every read has a bound: the one bounded file reader, the bounded JSON and YAML parsers, the directory-listing
parser, decompression and the cache metadata, each against hostile input made at test time."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import signal
import threading
import time
import tracemalloc
import zlib

import pytest
import yaml

from driver_loader.artifacts.cache import META_SUFFIX, ArtifactCache, UnsafeCachePathError, lock_file_name
from driver_loader.artifacts.elf import MAX_DECOMPRESSED_SIZE, decompress
from driver_loader.core.errors import VerificationError
from driver_loader.net.index import MAX_INDEX_ENTRIES, parse_directory_listing, parse_site_index, parse_site_version
from driver_loader.system.documents import MAX_DEPTH, MAX_YAML_NODES, DocumentLimitError, load_json, load_yaml
from driver_loader.system.files import (
    FileTooLarge,
    NotRegularFile,
    UnreadableFile,
    format_size,
    read_fd,
    read_regular_file,
)

pytest_plugins = ["download_fixtures"]


@contextlib.contextmanager
def interrupted_after(seconds: float):
    """Raise TimeoutError in the main thread if the block is still running after `seconds` (a blocking open or
    read is interrupted by the signal), so a regression fails the test instead of hanging the suite."""

    def expire(_signum, _frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- the bounded reader ---------------------------------------------------------------------------------------------


def test_a_regular_file_is_read_whole_up_to_its_limit(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    assert read_regular_file(str(path), 1000) == b"x" * 1000
    with pytest.raises(FileTooLarge) as caught:
        read_regular_file(str(path), 999)
    assert str(caught.value) == f"{path} is larger than 999 bytes"


def test_a_file_that_grows_past_its_size_is_still_cut_at_the_limit(tmp_path):
    # /proc-like files report a size of 0; the reader must not trust st_size to bound the read.
    path = tmp_path / "f"
    path.write_bytes(b"x" * 5000)
    with open(path, "rb") as handle:
        assert read_fd(handle.fileno(), 4096) == b"x" * 4096


def test_a_sparse_file_far_over_the_limit_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge"
    with open(path, "wb") as handle:
        handle.truncate(8 * 1024 ** 3)  # 8 GiB of holes
    with pytest.raises(FileTooLarge) as caught:
        read_regular_file(str(path), 1024 * 1024)
    assert caught.value.limit == 1024 * 1024 and "is larger than 1 MiB" in str(caught.value)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with interrupted_after(10), pytest.raises(NotRegularFile) as caught:
        read_regular_file(str(fifo), 1024)
    assert str(caught.value) == f"{fifo} is a FIFO, not a regular file"


@pytest.mark.parametrize("path, kind", [("/dev/zero", "a character device"), ("/", "a directory")])
def test_devices_and_directories_are_refused(path, kind):
    with interrupted_after(10), pytest.raises(NotRegularFile) as caught:
        read_regular_file(path, 1024)
    assert str(caught.value) == f"{path} is {kind}, not a regular file"


def test_a_link_to_dev_zero_is_refused_whether_followed_or_not(tmp_path):
    link = tmp_path / "link"
    os.symlink("/dev/zero", link)
    with pytest.raises(NotRegularFile, match="character device"):
        read_regular_file(str(link), 1024)
    with pytest.raises(NotRegularFile, match="symbolic link") as caught:
        read_regular_file(str(link), 1024, follow_symlinks=False)
    assert caught.value.symlink


def test_a_link_is_followed_only_when_asked(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"data")
    os.symlink(target, tmp_path / "link")
    assert read_regular_file(str(tmp_path / "link"), 10) == b"data"
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_regular_file("target", 10, dir_fd=directory, follow_symlinks=False) == b"data"
        with pytest.raises(NotRegularFile, match="symbolic link"):
            read_regular_file("link", 10, dir_fd=directory, follow_symlinks=False)
    finally:
        os.close(directory)


def test_a_missing_or_forbidden_file_says_so(tmp_path):
    with pytest.raises(UnreadableFile) as caught:
        read_regular_file(str(tmp_path / "absent"), 10)
    assert caught.value.missing and "No such file or directory" in str(caught.value)
    with pytest.raises(UnreadableFile) as caught:
        read_regular_file(str(tmp_path / "absent" / "below"), 10)
    assert caught.value.missing


def test_sizes_are_stated_as_the_readme_states_them():
    assert [format_size(n) for n in (1 << 20, 64 << 10, 32 << 20, 1000, 3 << 30)] == [
        "1 MiB", "64 KiB", "32 MiB", "1000 bytes", "3 GiB"]


# -- JSON and YAML --------------------------------------------------------------------------------------------------


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_nested_to_the_cap_is_read_and_one_more_level_is_refused():
    assert load_json(nested_json(MAX_DEPTH)) is not None
    assert load_json('{"a": ' * MAX_DEPTH + "1" + "}" * MAX_DEPTH)["a"] is not None
    with pytest.raises(DocumentLimitError, match=f"more than {MAX_DEPTH} levels"):
        load_json(nested_json(MAX_DEPTH + 1))
    with pytest.raises(DocumentLimitError):
        load_json('{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1))


def test_json_nested_past_the_interpreter_limit_is_a_limit_not_a_recursion_error():
    with pytest.raises(DocumentLimitError):
        load_json(nested_json(200_000))


BILLION_LAUGHS = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    + ["driver: {repos: *a9}"]
)


@pytest.fixture(params=["libyaml", "pure-python"])
def yaml_loader(request, monkeypatch):
    """Both PyYAML builds: with libyaml (as on Debian) and without it."""
    if request.param == "pure-python":
        monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    elif not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML without libyaml")
    return request.param


def test_yaml_aliases_are_refused(yaml_loader):
    with pytest.raises(yaml.YAMLError) as caught:
        load_yaml(BILLION_LAUGHS)
    assert "aliases" in caught.value.problem and caught.value.problem_mark.line == 1


def test_yaml_depth_and_size_are_capped(yaml_loader):
    # Collections are counted, as in JSON: the mapping and 31 lists inside it are 32 levels.
    assert load_yaml("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)) is not None
    with pytest.raises(yaml.YAMLError, match="levels deep"):
        load_yaml("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(yaml.YAMLError, match="nest"):  # libyaml's own limit (1000) may come first here
        load_yaml("[" * 100_000)
    with pytest.raises(yaml.YAMLError, match=f"more than {MAX_YAML_NODES} values"):
        load_yaml("[" + ", ".join(["1"] * 200_000) + "]")


def test_ordinary_yaml_still_loads(yaml_loader):
    text = "driver:\n  name: falco\n  repos: [https://a.example/d, https://b.example/d]\n  anchored: &x 1\n"
    assert load_yaml(text) == {"driver": {"name": "falco", "repos": ["https://a.example/d", "https://b.example/d"],
                                          "anchored": 1}}
    assert load_yaml("") is None


# -- version indexes ------------------------------------------------------------------------------------------------


def test_a_site_index_that_breaks_a_cap_is_a_limit_error():
    with pytest.raises(DocumentLimitError):
        parse_site_index(nested_json(100_000))
    with pytest.raises(DocumentLimitError, match=f"more than {MAX_INDEX_ENTRIES} versions"):
        parse_site_index(json.dumps([f"8.0.{i}+driver" for i in range(MAX_INDEX_ENTRIES + 1)]))
    assert len(parse_site_index(json.dumps([f"8.0.{i}+driver" for i in range(MAX_INDEX_ENTRIES)]))) == \
        MAX_INDEX_ENTRIES
    with pytest.raises(DocumentLimitError):
        parse_site_version('{"drivers": ' + nested_json(100_000) + "}")


def listing(count: int) -> str:
    return "<html><body><pre>\n" + "".join(
        f'<a href="8.{i}.0%2Bdriver/">8.{i}.0+driver/</a>\n' for i in range(count)) + "</pre></body></html>"


def test_a_listing_with_more_links_than_the_cap_is_refused_after_the_cap():
    # 100,000 links: the cap stops the parse (a quadratic parser never finished this).
    with pytest.raises(DocumentLimitError, match=f"more than {MAX_INDEX_ENTRIES} links"):
        parse_directory_listing(listing(100_000))


def test_a_listing_at_the_cap_is_parsed_whole_and_in_order():
    names = parse_directory_listing(listing(MAX_INDEX_ENTRIES))
    assert len(names) == MAX_INDEX_ENTRIES and names[:2] == ["8.0.0+driver", "8.1.0+driver"]


@pytest.mark.parametrize("text", [
    "<a " * 200_000,  # start tags that never end
    '<a href="' + "x" * 500_000,  # an attribute that never ends
    "<a " + "href " * 100_000 + ">",  # an attribute name repeated without a value
])
def test_malformed_listings_parse_to_nothing(text):
    assert parse_directory_listing(text) == []


def test_listing_links_in_other_spellings():
    text = "<A HREF=one/>one</A> <a class='x' href='two%2Bthree/'>2</a> <a href=\"a&amp;b/\">ab</a>"
    assert parse_directory_listing(text) == ["one", "two+three", "a&b"]


# -- decompression --------------------------------------------------------------------------------------------------


@functools.cache
def gzip_bomb(megabytes: int = 200) -> bytes:
    """A few hundred KiB of gzip that expands to `megabytes` MiB of zeros (more than the output cap)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1024 * 1024)
    return b"".join([compressor.compress(zeros) for _ in range(megabytes)] + [compressor.flush()])


def test_a_gzip_bomb_is_refused_within_the_output_cap_of_memory():
    bomb = gzip_bomb()
    assert len(bomb) < 1024 * 1024 < MAX_DECOMPRESSED_SIZE < 200 * 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(VerificationError, match=f"decompresses to more than {format_size(MAX_DECOMPRESSED_SIZE)}"):
            decompress(bomb, filename="bomb.ko.gz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The output cap and one read chunk, not what the bomb expands to (200 MiB), nor twice the cap.
    assert peak < MAX_DECOMPRESSED_SIZE + 32 * 1024 * 1024


# -- cache metadata -------------------------------------------------------------------------------------------------


def cached_entry(root, name: str, body: bytes = b"\x7fELF body") -> str:
    directory = os.path.join(root, "8.0.0+driver", "x86_64")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        handle.write(body)
    meta = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body), "url": None, "verified_by": "x",
            "created": "2026-01-01T00:00:00Z"}
    with open(path + META_SUFFIX, "w") as handle:
        json.dump(meta, handle)
    return path


def break_metadata(path: str, how: str) -> None:
    meta = path + META_SUFFIX
    os.unlink(meta)
    if how == "deep":
        with open(meta, "w") as handle:
            handle.write(nested_json(20_000))
    elif how == "fifo":
        os.mkfifo(meta)
    elif how == "huge":
        with open(meta, "wb") as handle:
            handle.truncate(1024 ** 3)
    elif how == "dev-zero":
        os.symlink("/dev/zero", meta)


@pytest.mark.parametrize("how", ["deep", "fifo", "huge", "dev-zero"])
def test_an_unusable_metadata_file_skips_that_entry_only(tmp_path, logs, how):
    root = str(tmp_path / "cache")
    good = cached_entry(root, "falco_good.ko")
    bad = cached_entry(root, "falco_bad.ko")
    break_metadata(bad, how)
    cache = ArtifactCache(root)
    with interrupted_after(20):
        assert [entry.path for entry in cache.entries()] == [good]
        assert cache.lookup(good) is not None
        if how == "dev-zero":  # a link planted in the cache is refused outright on lookup, as before
            with pytest.raises(UnsafeCachePathError):
                cache.lookup(bad)
        else:
            assert cache.lookup(bad) is None
    text = logs()
    assert "skipping a cache entry: its metadata cannot be used" in text and "falco_bad.ko" in text
    assert os.path.exists(bad)  # skipped, not deleted: the operator can look at it


def test_a_cached_file_much_larger_than_recorded_is_not_hashed_whole(tmp_path, logs):
    root = str(tmp_path / "cache")
    path = cached_entry(root, "falco_x.ko")
    with open(path, "r+b") as handle:
        handle.truncate(64 * 1024 ** 3)  # sparse: hashing it whole would read 64 GiB
    with interrupted_after(20):
        assert ArtifactCache(root).lookup(path) is None
    assert "does not match its recorded digest" in logs()


def test_trying_an_artifact_that_is_never_stored_leaves_no_directories(tmp_path):
    root = tmp_path / "cache"
    cache = ArtifactCache(str(root))
    for version in ("8.0.1+driver", "8.0.2+driver"):
        with cache.lock(str(root / version / "x86_64" / "falco_x.ko")):
            assert (root / version / "x86_64").is_dir()
    assert os.listdir(root) == []
    stored = cached_entry(str(root), "falco_y.ko")
    with cache.lock(str(root / "8.0.0+driver" / "x86_64" / "falco_z.ko")):
        pass
    assert sorted(os.listdir(os.path.dirname(stored))) == ["falco_y.ko", "falco_y.ko.meta.json"]


def test_a_loader_that_waited_for_a_lock_whose_file_was_removed_takes_a_fresh_one(tmp_path):
    root = tmp_path / "cache"
    path = str(root / "8.0.1+driver" / "x86_64" / "falco_x.ko")
    lock_file = os.path.join(os.path.dirname(path), lock_file_name("falco_x.ko"))
    first_holds, second_holds, release_first = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with ArtifactCache(str(root)).lock(path):
            first_holds.set()
            release_first.wait(10)  # the second loader is waiting on this lock file, which goes on release

    def second():
        with ArtifactCache(str(root)).lock(path):
            # Held on the file now at that name: anyone else opening it must wait.
            with open(lock_file) as other:
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    seen["exclusive"] = False
                except BlockingIOError:
                    seen["exclusive"] = True
            second_holds.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert first_holds.wait(10)
    threads[1].start()
    time.sleep(0.2)  # let the second loader reach the lock (if it is not there yet, it simply takes a fresh one)
    release_first.set()
    for thread in threads:
        thread.join(10)
    assert second_holds.is_set() and seen == {"exclusive": True}
    assert os.listdir(root) == []
