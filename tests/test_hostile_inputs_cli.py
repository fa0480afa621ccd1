"""Hostile files and documents through the command line: each ends in its documented exit code with a one-line
reason, no traceback, nothing left behind, and within its bound. Servers bind 127.0.0.1; files are made at test
time (FIFOs, sparse files, a gzip bomb, a billion-laughs config)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from download_helpers import DEFAULT_VERSION, FILENAME, artifact_path
from test_bounded_reads import BILLION_LAUGHS, cached_entry, gzip_bomb, listing, nested_json

from driver_loader.net.fetch import MAX_FALLBACK_VERSIONS
from driver_loader.net.index import MAX_INDEX_ENTRIES

pytest_plugins = ["download_fixtures"]

REPO = Path(__file__).resolve().parent.parent


def run(tmp_path, *args, timeout=120):
    """The CLI in a subprocess; a read that blocks shows up as TimeoutExpired, not as a hung suite."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-m", "driver_loader", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(tmp_path))


def assert_one_line_failure(result, code, *fragments):
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def files_below(directory: Path):
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# -- hostile files where a regular file is meant ------------------------------------------------------------------


def hostile_file(tmp_path: Path, kind: str) -> str:
    path = tmp_path / f"hostile-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        return "/dev/zero"
    elif kind == "link-to-dev-zero":
        os.symlink("/dev/zero", path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "sparse-2GiB":
        with open(path, "wb") as handle:
            handle.truncate(2 * 1024 ** 3)
    return str(path)


FILE_KINDS = ["fifo", "dev-zero", "link-to-dev-zero", "directory", "sparse-2GiB"]
REASONS = {"fifo": "is a FIFO", "dev-zero": "is a character device", "link-to-dev-zero": "is a character device",
           "directory": "is a directory", "sparse-2GiB": "is larger than"}


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_config_that_is_not_a_regular_file_is_exit_2_naming_it(tmp_path, kind):
    config = hostile_file(tmp_path, kind)
    result = run(tmp_path, "printenv", "--config", config, timeout=60)
    assert_one_line_failure(result, 2, f"config file {config}", REASONS[kind])


@pytest.mark.parametrize("text, reason", [
    (BILLION_LAUGHS, "aliases"),
    ("driver:\n  repos: " + "[" * 40 + "]" * 40 + "\n", "levels deep"),
    ("driver:\n  repos: [" + ", ".join(["x"] * 50_000) + "]\n", "values"),
], ids=["aliases", "nesting", "values"])  # short ids: pytest 8 puts the whole text into the children's environment
def test_a_config_that_breaks_a_yaml_bound_is_exit_2_naming_it(tmp_path, text, reason):
    config = tmp_path / "falcoctl.yaml"
    config.write_text(text)
    result = run(tmp_path, "printenv", "--config", str(config), timeout=60)
    assert_one_line_failure(result, 2, f"config file {config} is not valid YAML", reason)


@pytest.fixture
def download(tmp_path):
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc" / "os-release").write_text('ID=ubuntu\nVERSION_ID="24.04"\n')
    cache = tmp_path / "cache"

    def go(*args, timeout=120):
        return run(tmp_path, "download", "--log-format", "text", "--host-root", str(host),
                   "--kernel-release", "6.8.0-79-generic", "--kernel-version", "#79-Ubuntu SMP PREEMPT_DYNAMIC",
                   "--arch", "x86_64", "--type", "kmod", "--driver-version", DEFAULT_VERSION,
                   "--cache-dir", str(cache), *args, timeout=timeout)

    go.cache = cache
    return go


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_a_checksums_file_that_is_not_a_regular_file_is_exit_2_and_leaves_nothing(server, download, tmp_path,
                                                                                 kind):
    sums = hostile_file(tmp_path, kind)
    result = download("--repo", server.url_for("/driver"), "--checksums", sums, timeout=60)
    assert_one_line_failure(result, 2, f"checksums file {sums}", REASONS[kind])
    assert files_below(download.cache) == []


def test_a_falco_that_answers_deeply_nested_json_is_no_version_source(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    answer = tmp_path / "answer.json"
    answer.write_text('{"driver_api_version": ' + nested_json(100_000) + "}\n")
    falco = bin_dir / "falco"
    falco.write_text(f"#!/bin/sh\ncat {answer}\n")
    falco.chmod(0o755)
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc" / "os-release").write_text("ID=debian\n")
    env_path = f"{bin_dir}:/usr/bin:/bin"
    result = subprocess.run(
        [sys.executable, "-m", "driver_loader", "printenv", "--host-root", str(host), "--kernel-release", "6.1.0",
         "--type", "kmod", "--config", os.devnull, "--log-format", "text"],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path / "home"), "PATH": env_path})
    assert_one_line_failure(result, 2, "no driver version")
    assert "falco --version printed no JSON" in result.stderr


# -- hostile version indexes -----------------------------------------------------------------------------------------


def test_a_site_index_nested_too_deeply_is_ignored_as_absent(server, download):
    server.expect_request("/driver/site/index.json").respond_with_data(nested_json(100_000))
    result = download("--repo", server.url_for("/driver"))
    assert_one_line_failure(result, 3, "no prebuilt kmod")
    assert "ignoring a version index document" in result.stderr and "levels deep" in result.stderr


def test_a_version_document_nested_too_deeply_is_ignored_as_absent(server, download):
    server.expect_request("/driver/site/index.json").respond_with_data('["8.0.0+driver", "8.1.0+driver"]')
    server.expect_request("/driver/site/8.1.0+driver.json").respond_with_data(
        '{"drivers": ' + nested_json(100_000) + "}")
    result = download("--repo", server.url_for("/driver"))
    assert_one_line_failure(result, 3, "no prebuilt kmod")
    assert "ignoring a version index document" in result.stderr
    # Ignored means unknown, so the artifact of 8.1.0 was still asked for.
    asked = [request.path for request, _ in server.log]
    assert artifact_path("8.1.0+driver") in asked


def test_a_site_index_listing_more_versions_than_the_cap_is_ignored(server, download):
    versions = [f"8.0.{i}+driver" for i in range(1, MAX_INDEX_ENTRIES * 10 + 1)]
    server.expect_request("/driver/site/index.json").respond_with_data(json.dumps(versions))
    result = download("--repo", server.url_for("/driver"))
    assert_one_line_failure(result, 3, "no prebuilt kmod")
    assert f"more than {MAX_INDEX_ENTRIES} versions" in result.stderr
    assert len(server.log) < 10


def test_a_listing_of_100000_links_is_ignored_after_the_cap(server, download):
    server.expect_request("/driver/").respond_with_data(listing(100_000), content_type="text/html")
    result = download("--repo", server.url_for("/driver"))
    assert_one_line_failure(result, 3, "no prebuilt kmod")
    assert f"more than {MAX_INDEX_ENTRIES} links" in result.stderr
    assert len(server.log) < 10


def test_the_version_fallback_tries_a_bounded_number_of_versions_highest_first(server, download):
    versions = [f"8.0.{i}+driver" for i in range(1, 301)]
    server.expect_request("/driver/site/index.json").respond_with_data(json.dumps(versions))
    result = download("--repo", server.url_for("/driver"))
    assert_one_line_failure(result, 3, "no prebuilt kmod")
    asked = [request.path for request, _ in server.log]
    tried = [v for v in reversed(versions) if artifact_path(v) in asked]
    assert tried == [f"8.0.{i}+driver" for i in range(300, 300 - MAX_FALLBACK_VERSIONS, -1)]
    # The index, the default version and each tried version: a few requests each, never one per listed version.
    assert len(asked) <= 1 + 4 * (1 + MAX_FALLBACK_VERSIONS)
    assert f"only the {MAX_FALLBACK_VERSIONS} highest of the 300 other versions" in result.stderr
    counted = re.search(rf"version fallback: tried {MAX_FALLBACK_VERSIONS} versions \((\d+) requests\)",
                        result.stderr)
    assert counted and 0 < int(counted.group(1)) <= len(asked)
    # Nothing was downloaded, so nothing is left in the cache: no directory per version tried.
    assert files_below(download.cache) == []


# -- hostile cache entries -------------------------------------------------------------------------------------------


def test_status_skips_and_reports_an_unusable_cache_entry_and_lists_the_others(tmp_path):
    cache = tmp_path / "cache"
    good = cached_entry(str(cache), "falco_good.ko")
    deep = cached_entry(str(cache), "falco_deep.ko")
    with open(deep + ".meta.json", "w") as handle:
        handle.write(nested_json(20_000))
    fifo = cached_entry(str(cache), "falco_fifo.ko")
    os.unlink(fifo + ".meta.json")
    os.mkfifo(fifo + ".meta.json")
    result = run(tmp_path, "status", "--output", "json", "--log-format", "text", "--cache-dir", str(cache),
                 "--host-root", str(tmp_path), "--driver-version", DEFAULT_VERSION,
                 "--falco-config-dir", str(tmp_path / "etc"), timeout=60)
    assert result.returncode == 0, result.stderr
    assert [entry["path"] for entry in json.loads(result.stdout)["cache"]["entries"]] == [good]
    warnings = [line for line in result.stderr.splitlines() if "skipping a cache entry" in line]
    assert len(warnings) == 2 and "falco_deep.ko" in warnings[0] + warnings[1] and "FIFO" in warnings[1] + warnings[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["fifo", "billion-laughs"])
def test_status_reports_a_hostile_falco_config_file_without_hanging(tmp_path, kind):
    config = tmp_path / "etc" / "config.d" / "engine-kind-falcoctl.yaml"
    config.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(config)
    else:
        config.write_text(BILLION_LAUGHS)
    result = run(tmp_path, "status", "--output", "json", "--log-format", "text", "--cache-dir", str(tmp_path / "c"),
                 "--host-root", str(tmp_path), "--driver-version", DEFAULT_VERSION,
                 "--falco-config-dir", str(tmp_path / "etc"), timeout=60)
    assert result.returncode == 0, result.stderr
    falco_config = json.loads(result.stdout)["falco_config"]
    assert falco_config["exists"]
    if kind == "fifo":
        assert "is a FIFO, not a regular file" in result.stderr
    else:
        assert "aliases" in falco_config["error"]
    assert "Traceback" not in result.stderr


def test_install_without_download_skips_a_cache_entry_with_broken_metadata(tmp_path, capsys):
    from test_install import World

    from driver_loader.core.errors import ExitCode, NoDriverError
    from driver_loader.output import log as logging_setup

    world = World(tmp_path)
    world.build.files.append(world.module())
    built = world.install(download=False)
    world.kernel.delete_module("falco", 0)
    with open(built.artifact + ".meta.json", "w") as handle:
        handle.write(nested_json(20_000))
    logging_setup.setup(log_format="text", log_level="info")
    try:
        with pytest.raises(NoDriverError) as caught:
            world.install(download=False, compile=False)
    finally:
        logging_setup.setup(log_format="auto", log_level="info")
    assert caught.value.exit_code == ExitCode.NO_DRIVER
    assert "skipping a cache entry: its metadata cannot be used" in capsys.readouterr().err
    assert world.kernel.module_version("falco") is None


# -- a decompression bomb ------------------------------------------------------------------------------------------


def test_inspecting_a_gzip_bomb_is_exit_4(tmp_path):
    bomb = tmp_path / FILENAME.replace(".ko", ".ko.gz")
    bomb.write_bytes(gzip_bomb())
    result = run(tmp_path, "inspect", str(bomb), "--kernel-release", "6.8.0-79-generic", timeout=120)
    assert_one_line_failure(result, 4, f"{bomb} decompresses to more than 128 MiB")
