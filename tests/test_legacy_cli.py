"""The legacy loader's, the falco-driver-loader image's, the Helm chart's and falcoctl's command lines: what each
becomes, that the different spellings mean the same settings, and the edge behaviour (usage, exit codes, links)."""

import os
import subprocess
import sys

import pytest
from cli_settings import settings_for

from driver_loader.cli import legacy
from driver_loader.cli.commands import _options
from driver_loader.cli.legacy import LEGACY_USAGE, go_duration_seconds, link_host_sources, translate
from driver_loader.core.errors import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UBUNTU = 'ID=ubuntu\nVERSION_ID="22.04"\n'
KREL, KVER = "5.15.0-1009-aws", "#9-Ubuntu SMP Thu May 12 10:33:41 UTC 2022"

# (argv as users write it, what it becomes, where the form comes from)
TRANSLATIONS = [
    # The legacy bash loader (Falco <= 0.36) and its packaging.
    ([], ["install"], "legacy: no arguments"),
    (["module"], ["install", "--type", "kmod"], "legacy"),
    (["bpf"], ["install", "--type", "ebpf"], "legacy: deb postinst for bpf"),
    (["--compile", "module"], ["install", "--type", "kmod", "--compile", "--no-download"], "legacy: deb postinst"),
    (["module", "--download"], ["install", "--type", "kmod", "--no-compile", "--download"], "legacy"),
    (["--compile", "--download"], ["install", "--compile", "--download"], "legacy: both given"),
    (["--clean"], ["cleanup"], "legacy: deb prerm"),
    (["module", "--clean"], ["cleanup", "--type", "kmod"], "legacy"),
    (["--print-env"], ["printenv"], "legacy"),
    (["bpf", "--print-env", "--clean"], ["printenv", "--type", "ebpf"], "legacy: --print-env wins over --clean"),
    # The falco-driver-loader image entrypoint (0.37+).
    (["kmod"], ["install", "--type", "kmod"], "entrypoint"),
    (["ebpf"], ["install", "--type", "ebpf"], "entrypoint 0.38"),
    (["modern_ebpf"], ["install", "--type", "modern_ebpf"], "entrypoint 0.38"),
    (["auto"], ["install", "--type", "auto"], "entrypoint 0.38"),
    (["--http-insecure", "kmod"], ["install", "--type", "kmod", "--http-insecure"], "entrypoint 0.37.1"),
    (["--kernel-release", KREL, "--kernel-version", KVER, "kmod"],
     ["install", "--type", "kmod", "--kernel-release", KREL, "--kernel-version", KVER], "entrypoint 0.38"),
    ([f"--kernel-release={KREL}", f"--kernel-version={KVER}", "auto"],
     ["install", "--type", "auto", "--kernel-release", KREL, "--kernel-version", KVER], "entrypoint, --opt=value"),
    (["--print-env", "--http-insecure", "kmod"], ["printenv", "--type", "kmod"], "entrypoint: install-only dropped"),
    (["--clean", "kmod"], ["cleanup", "--type", "kmod"], "entrypoint"),
    # The Helm chart: driver.loader.initContainer.args first, the kind last.
    (["--compile", "kmod"], ["install", "--type", "kmod", "--compile", "--no-download"], "chart, kind module"),
    (["--download", "auto"], ["install", "--type", "auto", "--no-compile", "--download"], "chart, kind auto"),
    (["--log-format=json", "--repo", "https://mirror.example/d", "--http-timeout=30", "kmod"],
     ["--log-format", "json", "install", "--type", "kmod", "--repo", "https://mirror.example/d", "--http-timeout",
      "30"], "chart with new options in args"),
    # falcoctl.
    (["driver", "install"], ["install"], "falcoctl"),
    (["driver", "install", "--type", "modern_ebpf", "--type", "kmod"],
     ["install", "--type", "modern_ebpf", "--type", "kmod"], "falcoctl: deb postinst auto"),
    (["driver", "install", "--download=false"], ["install", "--no-download"], "falcoctl: deb postinst kmod"),
    (["driver", "install", "--compile=true", "--download=false", "--http-insecure=false"],
     ["install", "--compile", "--no-download"], "falcoctl: image entrypoint's install call"),
    (["driver", "install", "--http-insecure=true", "--http-headers=X-A: 1,X-B: 2", "--http-timeout", "1m30s"],
     ["install", "--http-insecure", "--http-headers", "X-A: 1,X-B: 2", "--http-timeout", "90"], "falcoctl flags"),
    (["driver", "install", f"--kernelrelease={KREL}", "--kernelversion", KVER],
     ["install", "--kernelrelease", KREL, "--kernelversion", KVER], "falcoctl kernel spellings"),
    (["driver", "printenv", "--version", "8.0.0+driver"], ["printenv", "--version", "8.0.0+driver"],
     "falcoctl: --version is the driver version"),
    (["driver", "cleanup"], ["cleanup"], "falcoctl"),
    (["--config", "/etc/falcoctl/falcoctl.yaml", "driver", "--type", "kmod", "install"],
     ["install", "--config", "/etc/falcoctl/falcoctl.yaml", "--type", "kmod"], "falcoctl: root and driver flags"),
    (["--log-level", "debug", "driver", "printenv"], ["--log-level", "debug", "printenv"], "falcoctl: log flags"),
    (["-v", "driver", "install", "--download-headers=false"], ["--log-level", "debug", "install"],
     "falcoctl: deprecated -v; --download-headers=false is what we do anyway"),
    (["driver"], ["--help"], "falcoctl: bare driver command prints help"),
    # Our own subcommands pass through; options written before them move after them.
    (["install", "--type", "kmod", "--dry-run"], ["install", "--type", "kmod", "--dry-run"], "subcommand"),
    (["--host-root", "/host", "printenv", "--output", "json"], ["printenv", "--host-root", "/host", "--output", "json"],
     "subcommand with leading options"),
    (["--log-format", "json", "doctor"], ["--log-format", "json", "doctor"], "subcommand with group options"),
    (["--help"], ["--help"], "group help"),
    (["-V"], ["-V"], "our version"),
]


@pytest.mark.parametrize("argv, expected, source", TRANSLATIONS, ids=[" ".join(t[0]) or "(none)" for t in TRANSLATIONS])
def test_translation(argv, expected, source):
    translation = translate(argv)
    assert translation.action == "run"
    assert list(translation.argv) == expected


@pytest.mark.parametrize("argv, message", [
    (["--bogus"], "unknown option: --bogus"),
    (["kmod", "--bogus=1"], "unknown option: --bogus=1"),
    (["foo"], "unknown driver or command: foo"),
    (["module", "bpf"], "only one driver per invocation"),
    (["kmod", "auto"], "only one driver per invocation"),
    (["--clean", "--compile"], "--clean cannot be combined"),
    (["--download", "--clean", "kmod"], "--clean cannot be combined"),
    (["kmod", "--type", "ebpf"], "either as a word"),
    (["--kernel-release"], "needs a value"),
    (["driver", "install", "--download=maybe"], "expects true or false"),
    (["driver", "config", "--type", "kmod"], "no equivalent"),
    (["driver", "frobnicate"], "unknown command: driver frobnicate"),
])
def test_usage_errors(argv, message):
    with pytest.raises(UsageError) as caught:
        translate(argv)
    assert message in caught.value.message


@pytest.mark.parametrize("argv", [["kmod", "--help"], ["kmod", "-h"], ["--compile", "-h"], ["bpf", "--help"],
                                  ["--entrypoint", "auto", "--help"]])
def test_help_in_the_legacy_form_only_prints_help(argv):
    assert translate(argv).action == "help"


def test_source_only_does_nothing():
    translation = translate(["--source-only", "module"])
    assert translation.action == "nothing"
    assert translation.argv == ()


def test_entrypoint_marker_is_stripped_and_links_sources():
    translation = translate(["--entrypoint", "--compile", "kmod"])
    assert translation.link_sources
    assert list(translation.argv) == ["install", "--type", "kmod", "--compile", "--no-download"]
    assert not translate(["--compile", "kmod"]).link_sources


@pytest.mark.parametrize("text, seconds", [
    ("60s", 60.0), ("1m0s", 60.0), ("1m30s", 90.0), ("1h", 3600.0), ("500ms", 0.5), ("1.5s", 1.5),
    ("30", None), ("s", None), ("1x", None), ("", None),
])
def test_go_durations(text, seconds):
    assert go_duration_seconds(text) == seconds


def test_every_install_option_is_accepted_in_the_legacy_form():
    """Options are read from the click definitions, so a new install option works in the chart's args at once."""
    translation = translate(["--no-version-fallback", "--verify", "strict", "--dry-run", "--cache-dir", "/c", "kmod"])
    assert list(translation.argv) == ["install", "--type", "kmod", "--no-version-fallback", "--verify", "strict",
                                      "--dry-run", "--cache-dir", "/c"]


# -- same meaning: the settings each spelling resolves to -----------------------------------------------------------

def _settings(argv, env, monkeypatch, tmp_path):
    monkeypatch.setattr(_options, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent-falcoctl.yaml"))
    return settings_for(argv, env)


SAME_MEANING = [
    # legacy env + legacy words == subcommand flags
    (["--compile", "module"], {"DRIVERS_REPO": "https://m.example/d", "DRIVER_NAME": "my-driver",
                               "DRIVER_VERSION": "6.0.1+driver", "DRIVER_KERNEL_RELEASE": KREL,
                               "DRIVER_KERNEL_VERSION": KVER, "DRIVER_INSECURE_DOWNLOAD": "1", "HOST_ROOT": "/host"},
     ["install", "--type", "kmod", "--no-download", "--repo", "https://m.example/d", "--name", "my-driver",
      "--driver-version", "6.0.1+driver", "--kernel-release", KREL, "--kernel-version", KVER, "--http-insecure",
      "--host-root", "/host"]),
    # the image entrypoint with FALCOCTL_DRIVER_* == falcoctl == subcommand
    (["--http-insecure", "--kernel-release", KREL, "auto"],
     {"FALCOCTL_DRIVER_REPOS": "https://a.example/d,https://b.example/d", "FALCOCTL_DRIVER_NAME": "falco",
      "FALCOCTL_DRIVER_HTTP_HEADERS": "X-Token: abc", "HOST_ROOT": "/host"},
     ["install", "--type", "modern_ebpf,kmod", "--http-insecure", "--kernel-release", KREL,
      "--repo", "https://a.example/d", "--repo", "https://b.example/d", "--http-header", "X-Token: abc",
      "--host-root", "/host"]),
    (["driver", "install", "--type", "kmod", "--download=false", f"--kernelrelease={KREL}", "--http-timeout=2m"],
     {}, ["install", "--type", "kmod", "--no-download", "--kernel-release", KREL, "--http-timeout", "120"]),
    (["bpf", "--download"], {}, ["install", "--type", "ebpf", "--no-compile"]),
    ([], {"FALCO_BPF_PROBE": ""}, ["install", "--type", "ebpf"]),
    (["module"], {"FALCO_BPF_PROBE": "/root/.falco/falco-bpf.o"}, ["install", "--type", "kmod"]),
    (["--print-env", "kmod"], {"DRIVER_KERNEL_RELEASE": KREL}, ["printenv", "--type", "kmod", "--kernel-release",
                                                                KREL]),
    (["--clean"], {"HOST_ROOT": "/host"}, ["cleanup", "--host-root", "/host"]),
]


@pytest.mark.parametrize("legacy_argv, env, modern_argv", SAME_MEANING,
                         ids=[" ".join(case[0]) or "(none)" for case in SAME_MEANING])
def test_spellings_mean_the_same(legacy_argv, env, modern_argv, monkeypatch, tmp_path):
    legacy_command, legacy_settings = _settings(legacy_argv, env, monkeypatch, tmp_path)
    modern_command, modern_settings = _settings(modern_argv, {}, monkeypatch, tmp_path)
    assert legacy_command == modern_command
    assert legacy_settings == modern_settings


# -- through main(), in a subprocess --------------------------------------------------------------------------------

def run(*args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("FALCOCTL_", "DRIVER", "HOST_ROOT"))}
    full_env.update(env or {})
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "falco-driver-loader"), *args],
                          capture_output=True, text=True, env=full_env, timeout=60)


@pytest.fixture
def fake_host(host_root, tmp_path):
    root = host_root({"etc/os-release": UBUNTU})
    return {"HOST_ROOT": root, "DRIVER_VERSION": "8.0.0+driver", "DRIVER_KERNEL_RELEASE": KREL,
            "DRIVER_KERNEL_VERSION": KVER, "HOME": str(tmp_path / "home")}


def test_print_env_prints_falcoctls_format(fake_host):
    result = run("--print-env", "--arch", "amd64", "module", env=fake_host)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        'DRIVER="kmod"\n'
        'DRIVERS_REPO="https://download.falco.org/driver"\n'
        'DRIVER_VERSION="8.0.0+driver"\n'
        'DRIVER_NAME="falco"\n'
        f'HOST_ROOT="{fake_host["HOST_ROOT"]}"\n'
        'TARGET_ID="ubuntu-aws"\n'
        'ARCH="x86_64"\n'
        f'KERNEL_RELEASE="{KREL}"\n'
        f'KERNEL_VERSION="{KVER}"\n'
        f'FIXED_KERNEL_RELEASE="{KREL}"\n'
        'FIXED_KERNEL_VERSION="9"\n'
    )


@pytest.mark.parametrize("argv", [
    ["--print-env", "bpf"],
    ["--print-env", "--compile", "--download", "bpf"],
    ["driver", "printenv", "--type", "ebpf"],
    ["printenv", "--type", "ebpf"],
    ["--print-env", "--kernel-release", "6.1.0-10-cloud-amd64", "ebpf"],
], ids=lambda argv: " ".join(argv))
def test_print_env_spellings_agree(fake_host, argv):
    """The kernel release given as a flag beats DRIVER_KERNEL_RELEASE; otherwise all spellings print the same."""
    expected = run("printenv", "--type", "ebpf", "--kernel-release", KREL, "--kernel-version", KVER,
                   env={k: v for k, v in fake_host.items() if not k.startswith("DRIVER_KERNEL")})
    result = run(*argv, env=fake_host)
    assert result.returncode == 0, result.stderr
    if "--kernel-release" in argv:
        assert 'KERNEL_RELEASE="6.1.0-10-cloud-amd64"\n' in result.stdout
    else:
        assert result.stdout == expected.stdout


def test_help_prints_the_legacy_usage_and_exits_0(fake_host):
    result = run("module", "--help", env=fake_host)
    assert result.returncode == 0
    assert result.stdout == LEGACY_USAGE
    assert result.stderr == ""


@pytest.mark.parametrize("argv, message", [
    (["--bogus"], "error: unknown option: --bogus"),
    (["kmod", "frob"], "error: unknown driver or command: frob"),
    (["module", "bpf"], "error: only one driver per invocation"),
])
def test_usage_errors_exit_2_with_the_usage(fake_host, argv, message):
    result = run(*argv, env=fake_host)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(message)
    assert LEGACY_USAGE in result.stderr


def test_source_only_exits_0_and_prints_nothing(fake_host):
    result = run("--source-only", env=fake_host)
    assert result.returncode == 0
    assert result.stdout == ""


def test_curl_options_get_a_warning_naming_the_replacements(fake_host):
    result = run("--print-env", "kmod", env={**fake_host, "DRIVER_CURL_OPTIONS": "--proxy http://p:3128"})
    assert result.returncode == 0, result.stderr
    assert "DRIVER_CURL_OPTIONS is ignored" in result.stderr
    for replacement in ("--http-timeout", "--http-retries", "--http-header", "--ca-bundle", "--http-insecure",
                        "HTTPS_PROXY"):
        assert replacement in result.stderr
    assert "DRIVER_CURL_OPTIONS" not in run("--print-env", "kmod", env=fake_host).stderr


# -- entrypoint mode: linking the host's kernel sources --------------------------------------------------------------

def test_link_host_sources(tmp_path):
    host = tmp_path / "host"
    for name in ("linux-headers-6.1.0-13-amd64", "linux-headers-6.1.0-13-common", "falco-8.0.0+driver"):
        (host / "usr/src" / name).mkdir(parents=True)
    usr_src = tmp_path / "usr-src"
    usr_src.mkdir()
    (usr_src / "falco-8.0.0+driver").mkdir()  # the image's own copy stays

    made = link_host_sources(str(host), str(usr_src))

    assert made == [str(usr_src / "linux-headers-6.1.0-13-amd64"), str(usr_src / "linux-headers-6.1.0-13-common")]
    assert os.readlink(usr_src / "linux-headers-6.1.0-13-amd64") == str(host / "usr/src/linux-headers-6.1.0-13-amd64")
    assert not os.path.islink(usr_src / "falco-8.0.0+driver")
    assert link_host_sources(str(host), str(usr_src)) == []  # idempotent


def test_link_host_sources_without_a_mounted_usr_src(tmp_path):
    assert link_host_sources(str(tmp_path / "missing"), str(tmp_path / "usr-src")) == []


def test_entrypoint_mode_links_from_the_host_root(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(legacy, "link_host_sources", lambda root: calls.append(root) or [])
    argv = legacy.translate_argv(["--entrypoint", "--print-env", "kmod"], env={"HOST_ROOT": "/host"})
    assert argv == ["printenv", "--type", "kmod"]
    assert calls == ["/host"]
    legacy.translate_argv(["--entrypoint", "--host-root", "/mnt/node", "printenv"], env={"HOST_ROOT": "/host"})
    assert calls == ["/host", "/mnt/node"]
    legacy.translate_argv(["--print-env"], env={"HOST_ROOT": "/host"})
    legacy.translate_argv(["--entrypoint", "--print-env"], env={})
    assert calls == ["/host", "/mnt/node"]
