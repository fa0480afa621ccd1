import os
import stat
from pathlib import Path

import pytest
import yaml

from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import ExitCode, LoaderError
from driver_loader.falco.config import (
    engine_config_path,
    engine_config_text,
    read_engine_config,
    remove_engine_config,
    write_engine_config,
)


@pytest.mark.parametrize(
    ("kind", "probe", "text"),
    [
        (DriverType.KMOD, None, "engine:\n    kind: kmod\n"),
        (DriverType.MODERN_EBPF, None, "engine:\n    kind: modern_ebpf\n"),
        (DriverType.EBPF, "/root/.falco/falco-bpf.o",
         "engine:\n    kind: ebpf\n    ebpf:\n        probe: /root/.falco/falco-bpf.o\n"),
        (DriverType.EBPF, '/data/my probe: "x" #1.o',
         'engine:\n    kind: ebpf\n    ebpf:\n        probe: "/data/my probe: \\"x\\" #1.o"\n'),
    ],
)
def test_content_is_what_falcoctl_writes(kind, probe, text):
    assert engine_config_text(kind, probe) == text
    doc = yaml.safe_load(text)
    assert doc["engine"]["kind"] == str(kind)
    if probe:
        assert doc["engine"]["ebpf"]["probe"] == probe


def test_write_creates_config_d_with_fixed_modes(tmp_path):
    old = os.umask(0o077)
    try:
        path, changed = write_engine_config(str(tmp_path / "falco"), DriverType.KMOD)
    finally:
        os.umask(old)
    assert changed
    assert path == str(tmp_path / "falco" / "config.d" / "engine-kind-falcoctl.yaml")
    assert Path(path).read_text() == "engine:\n    kind: kmod\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "falco" / "config.d").st_mode) == 0o755


def test_rewriting_the_same_content_changes_nothing(tmp_path):
    path, _ = write_engine_config(str(tmp_path), DriverType.KMOD)
    before = os.stat(path)
    assert write_engine_config(str(tmp_path), DriverType.KMOD) == (path, False)
    after = os.stat(path)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_a_change_replaces_the_file_by_rename_and_leaves_no_temp(tmp_path):
    path, _ = write_engine_config(str(tmp_path), DriverType.KMOD)
    inode = os.stat(path).st_ino
    with open(path) as reader:  # a reader holding the old file keeps seeing the whole old content
        assert write_engine_config(str(tmp_path), DriverType.MODERN_EBPF) == (path, True)
        assert reader.read() == "engine:\n    kind: kmod\n"
    assert os.stat(path).st_ino != inode
    assert Path(path).read_text() == "engine:\n    kind: modern_ebpf\n"
    assert os.listdir(tmp_path / "config.d") == ["engine-kind-falcoctl.yaml"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch, failing):
    path, _ = write_engine_config(str(tmp_path), DriverType.KMOD)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(LoaderError) as caught:
        write_engine_config(str(tmp_path), DriverType.MODERN_EBPF)
    monkeypatch.undo()
    assert caught.value.exit_code == ExitCode.RUNTIME
    assert path in caught.value.message and "No space left" in caught.value.message
    assert "left unchanged" in caught.value.hint
    assert Path(path).read_text() == "engine:\n    kind: kmod\n"
    assert os.listdir(tmp_path / "config.d") == ["engine-kind-falcoctl.yaml"]


def test_an_unusable_config_dir_is_a_clear_error(tmp_path):
    (tmp_path / "falco").write_text("not a directory")
    with pytest.raises(LoaderError, match="cannot write Falco's driver config"):
        write_engine_config(str(tmp_path / "falco"), DriverType.KMOD)


def test_read_reports_kind_and_probe(tmp_path):
    assert read_engine_config(str(tmp_path)).exists is False
    write_engine_config(str(tmp_path), DriverType.EBPF, "/root/.falco/falco-bpf.o")
    config = read_engine_config(str(tmp_path))
    assert (config.exists, config.kind, config.probe) == (True, "ebpf", "/root/.falco/falco-bpf.o")
    assert config.content.startswith("engine:\n")


def test_read_reports_a_broken_file_without_failing(tmp_path):
    path = engine_config_path(str(tmp_path))
    os.makedirs(os.path.dirname(path))
    Path(path).write_text("engine: [unclosed\n")
    config = read_engine_config(str(tmp_path))
    assert config.exists and config.kind is None and "not valid YAML" in config.error


def test_remove_is_idempotent(tmp_path):
    path, _ = write_engine_config(str(tmp_path), DriverType.KMOD)
    assert remove_engine_config(str(tmp_path)) == path
    assert not os.path.exists(path)
    assert remove_engine_config(str(tmp_path)) is None
