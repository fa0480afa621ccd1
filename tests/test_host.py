"""The host reader: bounded, regular files only, and never out of the host root."""

import os

import pytest

from driver_loader.core.settings import Settings
from driver_loader.host.root import read_host_facts, read_host_file, resolve_in_root


def test_absolute_symlink_resolves_inside_the_host_root(host_root):
    root = host_root({"usr/lib/os-release": "ID=debian\n"})
    os.symlink("/usr/lib/os-release", os.path.join(root, "etc-link"))
    os.makedirs(os.path.join(root, "etc"))
    os.symlink("../usr/lib/os-release", os.path.join(root, "etc/os-release"))
    assert read_host_file(root, "etc/os-release") == b"ID=debian\n"
    assert resolve_in_root(root, "etc-link") == os.path.join(root, "usr/lib/os-release")


def test_symlink_cannot_climb_out_of_the_host_root(host_root, tmp_path):
    (tmp_path / "secret").write_text("ID=outside\n")
    root = host_root({"placeholder": ""})
    os.makedirs(os.path.join(root, "etc"))
    os.symlink("../../../../../../secret", os.path.join(root, "etc/os-release"))
    assert read_host_file(root, "etc/os-release") is None


def test_link_to_dev_zero_is_refused_without_hanging(host_root):
    root = host_root({"placeholder": ""})
    os.makedirs(os.path.join(root, "etc"))
    os.symlink("/dev/zero", os.path.join(root, "etc/os-release"))
    assert read_host_file(root, "etc/os-release") is None
    # With the real root the link reaches the real /dev/zero: still refused, it is not a regular file.
    assert read_host_file("/", "dev/zero") is None


def test_fifo_is_refused_without_blocking(host_root):
    root = host_root({"placeholder": ""})
    os.makedirs(os.path.join(root, "etc"))
    os.mkfifo(os.path.join(root, "etc/os-release"))
    assert read_host_file(root, "etc/os-release") is None


def test_symlink_loop_is_refused(host_root):
    root = host_root({"placeholder": ""})
    os.makedirs(os.path.join(root, "etc"))
    os.symlink("os-release", os.path.join(root, "etc/os-release"))
    assert read_host_file(root, "etc/os-release") is None


def test_reads_are_bounded(host_root):
    root = host_root({"etc/os-release": "ID=debian\n" + "X=" + "a" * 200_000 + "\n"})
    assert len(read_host_file(root, "etc/os-release")) == 64 * 1024


def test_missing_etc_under_a_host_root_warns_by_name(host_root, capsys):
    root = host_root({"placeholder": ""})
    facts = read_host_facts(Settings(host_root=root, kernel_release="6.1.0", kernel_version="#1"))
    assert facts.has_os_release is False
    err = capsys.readouterr().err
    assert f"not mounted at {root}/etc" in err


def test_usr_lib_os_release_is_the_fallback(host_root):
    root = host_root({"usr/lib/os-release": "ID=fedora\n"})
    facts = read_host_facts(Settings(host_root=root, kernel_release="6.1.0", kernel_version="#1"))
    assert facts.os_release["ID"] == "fedora"


@pytest.mark.parametrize(
    "content, expected_id",
    [
        (b'ID="ubuntu"\n', "ubuntu"),
        (b"ID = foo\n", "foo"),  # falcoctl's tests write spaces around '='
        (b"# comment\nID=arch # trailing\n", "arch"),
        (b"ID='single'\n", "single"),
        (b'ID="unterminated\n', None),
        (b"ID=ub\xffuntu\n", "ub\ufffduntu"),
    ],
)
def test_os_release_parsing(content, expected_id, host_root):
    root = host_root({"etc/os-release": content})
    facts = read_host_facts(Settings(host_root=root, kernel_release="6.1.0", kernel_version="#1"))
    assert facts.os_release.get("ID") == expected_id


def test_uname_is_used_without_overrides(host_root):
    root = host_root({"etc/os-release": "ID=debian\n"})
    facts = read_host_facts(Settings(host_root=root))
    uname = os.uname()
    assert (facts.kernel_release, facts.kernel_version) == (uname.release, uname.version)
    assert facts.arch in ("x86_64", "aarch64", uname.machine)
