"""The shared helpers of driver_loader/system: the atomic writer, the subprocess runner and the syscall table."""

import os
import sys

import pytest

from driver_loader.system import atomic
from driver_loader.system.atomic import AtomicFile, symlink_atomically, write_atomically
from driver_loader.system.runner import CommandRunner
from driver_loader.system.syscalls import syscall_number, syscall_numbers


def test_write_atomically_replaces_the_file_with_the_mode_asked_for(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"old")
    old_umask = os.umask(0o077)
    try:
        write_atomically(str(path), b"new", mode=0o644)
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new"
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.parametrize("failing", ["write_all", "fsync", "replace"])
def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, failing):
    path = tmp_path / "file"
    path.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic if failing == "write_all" else os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(str(path), b"new", mode=0o644)
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file"]


def test_write_atomically_does_not_follow_a_planted_temp_symlink(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.symlink(victim, tmp_path / ".file.planted.tmp")
    monkeypatch.setattr(atomic, "temp_name", lambda name: f".{name}.planted.tmp")
    with pytest.raises(OSError):
        write_atomically(str(tmp_path / "file"), b"new", mode=0o644)
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "file").exists()


def test_an_atomic_file_left_without_install_is_removed(tmp_path):
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(RuntimeError), AtomicFile(dir_fd, "artifact", mode=0o644) as temp:
            temp.write(b"half")
            raise RuntimeError("the source broke")
        with AtomicFile(dir_fd, "artifact", mode=0o644) as temp:
            temp.write(b"whole")
        assert os.listdir(tmp_path) == []
        with AtomicFile(dir_fd, "artifact", mode=0o644) as temp:
            temp.write(b"whole")
            temp.install()
    finally:
        os.close(dir_fd)
    assert os.listdir(tmp_path) == ["artifact"]
    assert (tmp_path / "artifact").read_bytes() == b"whole"


def test_symlink_atomically_replaces_a_link_and_leaves_no_temp(tmp_path):
    link = tmp_path / "falco-bpf.o"
    symlink_atomically("/first", str(link))
    symlink_atomically("/second", str(link))
    assert os.readlink(link) == "/second"
    assert os.listdir(tmp_path) == ["falco-bpf.o"]


def test_a_failed_symlink_leaves_the_old_link(tmp_path, monkeypatch):
    link = tmp_path / "falco-bpf.o"
    symlink_atomically("/first", str(link))

    def fail(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        symlink_atomically("/second", str(link))
    monkeypatch.undo()
    assert os.readlink(link) == "/first"
    assert os.listdir(tmp_path) == ["falco-bpf.o"]


def test_the_runner_passes_only_the_descriptors_asked_for(tmp_path):
    path = tmp_path / "module.ko"
    path.write_bytes(b"module bytes")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        script = "import os, sys; sys.stdout.write(os.read(int(sys.argv[1]), 100).decode())"
        passed = CommandRunner().run([sys.executable, "-c", script, str(fd)], timeout=60, pass_fds=(fd,))
        closed = CommandRunner().run([sys.executable, "-c", script, str(fd)], timeout=60)
    finally:
        os.close(fd)
    assert (passed.ok, passed.stdout) == (True, "module bytes")
    assert not closed.ok and "Bad file descriptor" in closed.stderr


def test_filter_bytes_keeps_at_most_one_byte_over_the_limit_and_stops_the_program():
    script = "import sys\nwhile True: sys.stdout.buffer.write(b'x' * 65536)"
    out, result = CommandRunner().filter_bytes([sys.executable, "-c", script], b"", limit=1000, timeout=60)
    assert len(out) == 1001
    assert not result.timed_out


def test_filter_bytes_feeds_stdin_and_reports_failure_and_timeout():
    out, result = CommandRunner().filter_bytes(
        [sys.executable, "-c", "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d[::-1])"],
        b"abc", limit=100, timeout=60)
    assert (out, result.ok) == (b"cba", True)
    out, result = CommandRunner().filter_bytes(
        [sys.executable, "-c", "import sys; sys.stderr.write('bad frame\\n'); sys.exit(3)"], b"", limit=100,
        timeout=60)
    assert (out, result.returncode, result.stderr.strip()) == (b"", 3, "bad frame")
    out, result = CommandRunner().filter_bytes([sys.executable, "-c", "import time; time.sleep(60)"], b"",
                                               limit=100, timeout=0.5)
    assert result.timed_out and result.describe(0.5) == "timed out after 0.5 s"
    out, result = CommandRunner().filter_bytes(["/nonexistent/zstd"], b"", limit=100, timeout=5)
    assert result.returncode is None and "could not start" in result.describe(5)


def test_one_syscall_table_for_every_user():
    assert syscall_numbers("amd64") == syscall_numbers("x86_64") == {"finit_module": 313, "delete_module": 176,
                                                                      "bpf": 321}
    assert syscall_number("finit_module", "arm64") == 273
    assert syscall_numbers("riscv64") == {}
