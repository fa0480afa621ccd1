"""The command line's edges: signals, invalid values, the config file's types and relative paths, a repository URL
with a query string, and stderr as JSON lines.

Signals go to a real `python -m driver_loader` process blocked on a slow server on 127.0.0.1; the rest runs main()
in process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from cli_settings import settings_for
from download_helpers import FILENAME, RawServer, response_head

from driver_loader.cli.commands import _options
from driver_loader.cli.main import main
from driver_loader.output import log as logging_setup

REPO = Path(__file__).resolve().parent.parent
TARGET = ["--kernel-release", "6.8.0-79-generic", "--kernel-version", "#79-Ubuntu SMP", "--arch", "x86_64",
          "--driver-version", "8.0.0+driver"]


@pytest.fixture(autouse=True)
def _default_logs():
    yield
    logging_setup.setup(log_format="auto", log_level="info")


@pytest.fixture
def host(tmp_path):
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=ubuntu\nVERSION_ID="24.04"\n')
    return root


def run_main(argv, capsys):
    """(exit status, stdout, stderr) of main(argv) in this process."""
    try:
        main(argv)
        code = 0
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


# -- signals -------------------------------------------------------------------------------------------------------

@pytest.fixture
def stalled_download(host, tmp_path):
    """A download command and a server that sends half of the artifact, then stalls (at most 60 s)."""
    half_sent = threading.Event()

    def script(conn, request_line):
        if not request_line.split()[1].endswith(".ko"):
            conn.sendall(response_head("404 Not Found", length=0))
            return
        conn.sendall(response_head(length=100_000) + b"\x7fELF" + b"x" * 20_000)
        half_sent.set()
        raw.release.wait(60)

    raw = RawServer(script)
    cache = tmp_path / "cache"
    argv = [sys.executable, "-m", "driver_loader", "download", "--host-root", str(host), "--cache-dir", str(cache),
            "--type", "kmod", *TARGET, "--repo", raw.url("/driver"), "--http-timeout", "60"]
    yield argv, cache, half_sent
    raw.close()


def partial_or_artifact(cache: Path):
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.is_file() and not p.name.endswith(".lock"))


@pytest.mark.parametrize("signum, code, log_format", [
    (signal.SIGINT, 130, "text"),
    (signal.SIGINT, 130, "json"),
    (signal.SIGTERM, 143, "text"),
])
def test_a_signal_stops_the_run_with_one_line_and_nothing_partial(stalled_download, signum, code, log_format):
    argv, cache, half_sent = stalled_download
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([*argv, "--log-format", log_format], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not half_sent.wait(0.1):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("the download never started: " + process.communicate()[1])
        while not any(p.name.startswith(".partial-") for p in cache.rglob(".*")):
            assert time.monotonic() < deadline, "no partial file appeared"
            time.sleep(0.05)
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code, err
    assert out == ""
    lines = err.splitlines()
    name = signal.Signals(signum).name
    assert len(lines) == 1, err
    if log_format == "json":
        assert json.loads(lines[0])["msg"].startswith(f"interrupted by {name}")
    else:
        assert lines[0].startswith(f"interrupted by {name}")
    assert "Traceback" not in err and "Aborted" not in err
    assert partial_or_artifact(cache) == []


# -- invalid values --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, env, named", [
    (["--http-timeout", "nan"], {}, "--http-timeout"),
    (["--http-timeout", "inf"], {}, "--http-timeout"),
    (["--http-timeout", "-1"], {}, "--http-timeout"),
    (["--download-timeout", "nan"], {}, "--download-timeout"),
    (["--download-timeout", "0"], {}, "--download-timeout"),
    ([], {"FALCOCTL_DRIVER_DOWNLOAD_TIMEOUT": "inf"}, "FALCOCTL_DRIVER_DOWNLOAD_TIMEOUT"),
    ([], {"FALCOCTL_DRIVER_BUILD_TIMEOUT": "nan"}, "FALCOCTL_DRIVER_BUILD_TIMEOUT"),
    ([], {"FALCOCTL_DRIVER_TOOL_TIMEOUT": "soon"}, "FALCOCTL_DRIVER_TOOL_TIMEOUT"),
    (["--build-timeout", "1e400"], {}, "--build-timeout"),
    (["--http-timeout", "1e12"], {}, "--http-timeout"),
    (["--download-timeout", "1e308"], {}, "--download-timeout"),
    (["--http-retries", "-1"], {}, "--http-retries"),
    (["--http-retries", "1000000"], {}, "--http-retries"),
    (["--max-size", "0"], {}, "--max-size"),
    (["--unload-retries", "-3"], {}, "--unload-retries"),
    ([], {"FALCOCTL_DRIVER_CONFIG_UPDATE_FALCO": "maybe"}, "FALCOCTL_DRIVER_CONFIG_UPDATE_FALCO"),
    (["--repo", "file:relative/mirror"], {}, "file:relative/mirror"),
    (["--repo", "https://mirror.example/d#part"], {}, "#fragment"),
    (["--repo", "http://[::1/d"], {}, "not a valid URL"),
    (["--repo", "http://mirror.example:99999/d"], {}, "port must be a number"),
    (["--repo", "http://user@/d"], {}, "has no host"),
    ([], {"FALCOCTL_DRIVER_REPOS": "http://mirror.example:x/d"}, "port must be a number"),
])
def test_an_invalid_value_is_exit_2_naming_where_it_came_from(args, env, named, host, tmp_path, capsys,
                                                              monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(_options, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.yaml"))
    code, out, err = run_main(["install", "--dry-run", "--host-root", str(host), "--cache-dir", str(tmp_path / "c"),
                               *TARGET, *args], capsys)
    assert code == 2, err
    assert named in err
    assert "internal error" not in err and "Traceback" not in err
    assert out == ""


# -- the config file -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("section, key", [
    ({"config": {"configdir": ["x"]}}, "driver.config.configdir"),
    ({"config": {"configdir": {"a": 1}}}, "driver.config.configdir"),
    ({"config": ["configdir"]}, "driver.config"),
    ({"config": {"update_falco": "maybe"}}, "driver.config.update_falco"),
    ({"config": {"update_falco": 3}}, "driver.config.update_falco"),
    ({"version": 8}, "driver.version"),
    ({"version": 8.1}, "driver.version"),
    ({"name": True}, "driver.name"),
    ({"hostroot": ["/host"]}, "driver.hostroot"),
    ({"repos": {"a": "b"}}, "driver.repos"),
    ({"repos": ["https://ok.example/d", 5]}, "driver.repos"),
    ({"type": 5}, "driver.type"),
    ({"type": [["kmod"]]}, "driver.type"),
])
def test_a_config_value_of_the_wrong_type_is_exit_2_naming_the_key(section, key, host, tmp_path, capsys,
                                                                   monkeypatch):
    config = tmp_path / "falcoctl.yaml"
    config.write_text(yaml.safe_dump({"driver": section}))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = run_main(["install", "--dry-run", "--host-root", str(host), "--cache-dir", str(tmp_path / "c"),
                               "--config", str(config), *TARGET], capsys)
    assert code == 2, err
    assert f"{key} in {config}" in err
    assert "internal error" not in err
    assert list(work.iterdir()) == []  # nothing written under the working directory


def test_relative_paths_in_the_config_file_are_relative_to_the_file(tmp_path, monkeypatch):
    directory = tmp_path / "etc" / "falcoctl"
    directory.mkdir(parents=True)
    config = directory / "falcoctl.yaml"
    config.write_text(yaml.safe_dump({"driver": {"hostroot": "../../host", "config": {"configdir": "falco"}}}))
    monkeypatch.chdir(tmp_path)
    _, settings = settings_for(["printenv", "--config", str(config)], {})
    assert settings.falco_config_dir == str(directory / "falco")
    assert settings.host_root == str(tmp_path / "host")
    # a relative --config is taken from the working directory, and its paths still from the file's directory
    _, settings = settings_for(["printenv", "--config", "etc/falcoctl/falcoctl.yaml"], {})
    assert settings.falco_config_dir == str(directory / "falco")


def test_the_config_file_default_path_anchors_relative_paths_too(tmp_path, monkeypatch):
    config = tmp_path / "falcoctl.yaml"
    config.write_text(yaml.safe_dump({"driver": {"config": {"configdir": "./falco/"}}}))
    monkeypatch.setattr(_options, "DEFAULT_CONFIG_PATH", str(config))
    monkeypatch.chdir("/")
    _, settings = settings_for(["printenv"], {})
    assert settings.falco_config_dir == str(tmp_path / "falco")


def test_install_writes_falco_config_next_to_the_config_file_not_in_the_working_directory(host, tmp_path, capsys,
                                                                                          monkeypatch):
    config = tmp_path / "conf" / "falcoctl.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"driver": {"config": {"configdir": "falco"}}}))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = run_main(["install", "--dry-run", "--host-root", str(host), "--cache-dir", str(tmp_path / "c"),
                               "--config", str(config), "--type", "ebpf", *TARGET], capsys)
    assert code == 0, err
    assert str(tmp_path / "conf" / "falco" / "config.d") in out
    assert list(work.iterdir()) == []


# -- a repository URL with a query string ----------------------------------------------------------------------------

def test_the_artifact_path_goes_before_the_query_not_into_it(host, tmp_path, capsys):
    code, out, err = run_main(["printenv", "--output", "json", "--host-root", str(host), "--type", "kmod", *TARGET,
                               "--repo", "https://mirror.example/driver?token=abc&expires=1"], capsys)
    assert code == 0, err
    url = json.loads(out)["candidates"][0]["urls"][0]
    assert url.startswith(f"https://mirror.example/driver/8.0.0%2Bdriver/x86_64/{FILENAME}?")
    assert url.endswith("?token=****&expires=****")


# -- stderr as JSON lines ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["printenv", "--repo", "ftp://nowhere.example/d"],  # a usage error of ours
    ["printenv", "--no-such-option"],  # click's usage error
    ["kmod", "ebpf"],  # a legacy usage error, before click parses anything
    ["printenv", "--http-timeout", "nan"],
    ["install", "--dry-run", "--http-timeout", "nan"],
])
def test_with_json_logs_every_stderr_line_is_one_json_object(args, host, tmp_path, capsys):
    code, out, err = run_main(["--log-format", "json", "--log-level", "debug", *args, "--host-root", str(host)]
                              if args[0] != "kmod" else ["--log-format", "json", *args], capsys)
    assert code == 2, err
    lines = err.splitlines()
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict), line


def test_with_json_logs_an_internal_error_and_its_traceback_are_one_json_object(host, capsys, monkeypatch):
    from driver_loader.cli.commands import printenv

    def boom(*args, **kwargs):
        raise ValueError("something broke\nover two lines")

    monkeypatch.setattr(printenv, "resolve_plan", boom)
    code, out, err = run_main(["printenv", "--log-format", "json", "--log-level", "debug", "--host-root", str(host),
                               *TARGET], capsys)
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1, err
    event = json.loads(lines[0])
    assert event["msg"].startswith("internal error: ValueError: something broke")
    assert "Traceback (most recent call last)" in event["traceback"]


def test_a_line_that_bypasses_the_logger_is_still_wrapped_as_json(host, capsys, monkeypatch):
    from driver_loader.cli.commands import printenv

    def noisy(*args, **kwargs):
        sys.stderr.write("a library printing on its own\n")
        raise KeyError("x")

    monkeypatch.setattr(printenv, "resolve_plan", noisy)
    code, out, err = run_main(["printenv", "--log-format", "json", "--host-root", str(host), *TARGET], capsys)
    assert code == 1
    events = [json.loads(line) for line in err.splitlines()]
    assert [e["msg"] for e in events][0] == "a library printing on its own"


# -- output that cannot be written ---------------------------------------------------------------------------------

@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_reader_that_went_away_is_one_line_and_exit_1(host, log_format):
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout fails with a broken pipe
    try:
        result = subprocess.run([sys.executable, "-m", "driver_loader", "printenv", "--output", "json",
                                 "--log-format", log_format, "--host-root", str(host), "--type", "kmod", *TARGET],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(write_end)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "broken pipe" in lines[0] and "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    if log_format == "json":
        json.loads(lines[0])


def test_a_closed_stdout_is_not_an_error(host):
    result = subprocess.run([sys.executable, "-m", "driver_loader", "printenv", "--host-root", str(host),
                             "--type", "kmod", *TARGET], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=lambda: os.close(1))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
