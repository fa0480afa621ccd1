"""printenv end to end: falcoctl's exact format, the JSON plan, exit codes, and hostile input."""

import json
import os
import subprocess
import sys

import pytest

from driver_loader.cli.commands.printenv import go_quote

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UBUNTU = 'ID=ubuntu\nVERSION_ID="22.04"\n'
JSON_KEYS = {
    "driver_type", "driver_name", "driver_version", "compatible_range", "host_root", "arch", "target_id",
    "kernel_release", "kernel_version", "fixed_kernel_release", "fixed_kernel_version", "repos", "candidates",
}


def run(*args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("FALCOCTL_", "DRIVER"))}
    full_env.update(env or {})
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "falco-driver-loader"), *args],
                          capture_output=True, text=True, env=full_env, timeout=60)


def printenv(root, *extra, release="5.15.0-1009-aws", version="#9-Ubuntu SMP Thu May 12", env=None):
    return run("printenv", "--host-root", root, "--kernel-release", release, "--kernel-version", version,
               "--arch", "amd64", "--type", "kmod", "--driver-version", "8.0.0+driver", *extra, env=env)


def test_default_format_is_falcoctls(host_root):
    result = printenv(host_root({"etc/os-release": UBUNTU}))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        'DRIVER="kmod"\n'
        'DRIVERS_REPO="https://download.falco.org/driver"\n'
        'DRIVER_VERSION="8.0.0+driver"\n'
        'DRIVER_NAME="falco"\n'
        f'HOST_ROOT="{host_root()}"\n'
        'TARGET_ID="ubuntu-aws"\n'
        'ARCH="x86_64"\n'
        'KERNEL_RELEASE="5.15.0-1009-aws"\n'
        'KERNEL_VERSION="#9-Ubuntu SMP Thu May 12"\n'
        'FIXED_KERNEL_RELEASE="5.15.0-1009-aws"\n'
        'FIXED_KERNEL_VERSION="9"\n'
    )
    for line in result.stdout.splitlines():
        assert len(line.split("=", 1)) == 2


def test_json_plan(host_root, tmp_path):
    result = printenv(host_root({"etc/os-release": UBUNTU}), "--output", "json", "--cache-dir", str(tmp_path / "c"),
                      "--repo", "https://a.example/d", "--repo", "http://b.example/d/",
                      version="#48.1-Ubuntu SMP")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == JSON_KEYS
    assert doc["compatible_range"] == ">=8.0.0,<9.0.0"
    assert doc["repos"] == ["https://a.example/d", "http://b.example/d/"]
    first, legacy = doc["candidates"]
    assert first["filename"] == "falco_ubuntu-aws_5.15.0-1009-aws_48.1.ko"
    assert legacy["filename"] == "falco_ubuntu-aws_5.15.0-1009-aws_48.ko"
    assert first["cache_path"] == str(tmp_path / "c" / "8.0.0+driver" / "x86_64" / first["filename"])
    assert first["urls"] == [
        "https://a.example/d/8.0.0%2Bdriver/x86_64/falco_ubuntu-aws_5.15.0-1009-aws_48.1.ko",
        "http://b.example/d/8.0.0%2Bdriver/x86_64/falco_ubuntu-aws_5.15.0-1009-aws_48.1.ko",
    ]


def test_printenv_needs_no_version_source_beyond_the_flag(host_root):
    result = printenv(host_root({"etc/os-release": UBUNTU}), env={"PATH": "/nonexistent"})
    assert result.returncode == 0, result.stderr


def test_missing_version_exits_2_naming_every_source(host_root):
    root = host_root({"etc/os-release": UBUNTU})
    result = run("printenv", "--host-root", root, "--kernel-release", "6.1.0", "--type", "kmod",
                 "--config", os.devnull, env={"PATH": "/nonexistent"})
    assert result.returncode == 2
    for source in ("--driver-version", "FALCOCTL_DRIVER_VERSION", "falco --version", "/usr/src/falco-*"):
        assert source in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--repo", "ftp://mirror/driver"], "not an http, https, file or oci URL"),
        (["--type", "floppy"], "unsupported driver type"),
        (["--arch", "sparc"], "unsupported architecture"),
    ],
)
def test_bad_input_exits_2(args, needle, host_root):
    result = printenv(host_root({"etc/os-release": UBUNTU}), *args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_relative_host_root_exits_2():
    result = run("printenv", "--host-root", "foo/", "--driver-version", "8.0.0+driver")
    assert result.returncode == 2
    assert "absolute" in result.stderr


HOSTILE_OS_RELEASE = [
    "ID=../../../etc\n",
    'ID="a b"\n',
    "ID=$(touch /tmp/pwned)\n",
    "ID=ubuntu\x1b[31m\n",
    'ID="x/y"\n',
    "ID=..\n",
    "ID=flatcar\nVERSION_ID=../../../../tmp/x\n",
    "ID=talos\nVERSION_ID=\"v1 ; rm -rf\"\n",
    "ID=bottlerocket\nVERSION_ID=1.0\nVARIANT_ID=../../aws\n",
    "ID=amzn\n",
    "\x00\x01\x02\n",
]


@pytest.mark.parametrize("content", HOSTILE_OS_RELEASE)
def test_hostile_os_release_gives_no_unsafe_candidate(content, host_root, tmp_path):
    cache = tmp_path / "cache"
    result = printenv(host_root({"etc/os-release": content}), "--output", "json", "--cache-dir", str(cache))
    assert "Traceback" not in result.stderr
    if result.returncode == 2:
        return
    assert result.returncode == 0, result.stderr
    _assert_safe(json.loads(result.stdout), cache)


HOSTILE_UNAME = [
    ("../../../../etc/passwd", "#1 SMP"),
    ("6.1.0 evil", "#1 SMP"),
    ("6.1.0-13-amd64", "#1 ../../x"),
    ("6.1.0-13-amd64", "SMP Tue Jun 20"),
    ("6.1.0\n-13", "#1"),
    ("", "#1"),
    ("6.1.0-13-amd64", ""),
]


@pytest.mark.parametrize("release, version", HOSTILE_UNAME)
def test_hostile_uname_gives_exit_2_or_no_unsafe_candidate(release, version, host_root, tmp_path):
    cache = tmp_path / "cache"
    root = host_root({"etc/os-release": "ID=debian\n"})
    result = printenv(root, "--output", "json", "--cache-dir", str(cache), release=release, version=version)
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 2), result.stderr
    if result.returncode == 0:
        _assert_safe(json.loads(result.stdout), cache)


def _assert_safe(doc, cache):
    for candidate in doc["candidates"]:
        name = candidate["filename"]
        assert "/" not in name and ".." not in name and not any(c.isspace() for c in name)
        assert os.path.realpath(candidate["cache_path"]).startswith(str(cache) + os.sep)
        assert os.path.dirname(candidate["cache_path"]) == str(cache / doc["driver_version"] / doc["arch"])


def test_go_quote_escapes_like_strconv_quote():
    assert go_quote('a"b\\c\n\t\x01\x7f') == '"a\\"b\\\\c\\n\\t\\x01\\x7f"'
    assert go_quote("#1 SMP PREEMPT_DYNAMIC Mon, 05 Feb") == '"#1 SMP PREEMPT_DYNAMIC Mon, 05 Feb"'
    assert go_quote("caf\u00e9") == '"caf\u00e9"'


def test_unsafe_driver_version_exits_2(host_root):
    result = run("printenv", "--host-root", host_root({"etc/os-release": UBUNTU}), "--kernel-release", "6.1.0",
                 "--type", "kmod", "--driver-version", "../../x")
    assert result.returncode == 2
    assert "relative path segment" in result.stderr


@pytest.mark.parametrize(
    "os_release, release, filename",
    [
        ("ID=cos\nBUILD_ID=17412.101.42\n", "5.15.107+", "falco_cos_5.15.107+_1.ko"),
        ("ID=ol\nVERSION_ID=9.2\n", "5.15.0-101.103.2.1.el9uek.x86_64", "falco_ol_5.15.0-101.103.2.1.el9uek.x86_64_1.ko"),
        ("ID=centos\n", "3.9.0", "falco_centos_3.9.0_1.ko"),
    ],
)
def test_printenv_describes_a_type_the_host_cannot_take(os_release, release, filename, host_root):
    """printenv only describes: where install would exit 6, it still prints the plan, with a warning."""
    result = printenv(host_root({"etc/os-release": os_release}), "--output", "json", release=release, version="#1 SMP")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["candidates"][0]["filename"] == filename
    assert "no supported driver found" in result.stderr
