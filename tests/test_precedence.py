"""Every row of the README's precedence table: flag > FALCOCTL_DRIVER_* env > legacy env > falcoctl.yaml > default.

Each row lists its sources highest first. For every source, the test gives that source and every lower one, each
with a different value, and checks that the given source wins; so each source beats all lower ones, and falls
through to the next when it is absent. Empty environment values count as unset.
"""

import json

import pytest
import yaml
from cli_settings import settings_for

from driver_loader.cli.commands import _options
from driver_loader.cli.main import main
from driver_loader.core.driver_types import DriverType
from driver_loader.core.settings import DEFAULT_REPO

KMOD, EBPF, MODERN = DriverType.KMOD, DriverType.EBPF, DriverType.MODERN_EBPF


def flag(*args):
    return ("flag", args)


def env(name, value):
    return ("env", (name, value))


def config(section):
    return ("config", section)


# setting -> (read it from Settings, [(source, expected value when it is the highest given)], default)
ROWS = {
    "host root": (lambda s: s.host_root, [
        (flag("--host-root", "/from-flag"), "/from-flag"),
        (env("FALCOCTL_DRIVER_HOSTROOT", "/from-falcoctl-env"), "/from-falcoctl-env"),
        (env("HOST_ROOT", "/from-legacy-env"), "/from-legacy-env"),
        (config({"hostRoot": "/from-config"}), "/from-config"),
    ], "/"),
    "driver types": (lambda s: s.driver_types, [
        (flag("--type", "kmod"), (KMOD,)),
        (env("FALCOCTL_DRIVER_TYPE", "ebpf;kmod"), (EBPF, KMOD)),
        (env("FALCO_BPF_PROBE", "/root/.falco/falco-bpf.o"), (EBPF,)),
        (config({"type": ["kmod", "modern_ebpf"]}), (KMOD, MODERN)),
    ], (MODERN, KMOD)),
    "driver types, positional kind": (lambda s: s.driver_types, [
        (flag("module"), (KMOD,)),
        (env("FALCOCTL_DRIVER_TYPE", "modern_ebpf"), (MODERN,)),
        (env("FALCO_BPF_PROBE", ""), (EBPF,)),  # legacy: set-but-empty counts
    ], (MODERN, KMOD)),
    "driver version": (lambda s: s.driver_version, [
        (flag("--driver-version", "8.1.0+driver"), "8.1.0+driver"),
        (env("FALCOCTL_DRIVER_VERSION", "8.0.1+driver"), "8.0.1+driver"),
        (env("DRIVER_VERSION", "7.3.0+driver"), "7.3.0+driver"),
        (config({"version": "7.2.1+driver"}), "7.2.1+driver"),
    ], None),
    "driver version, falcoctl spelling": (lambda s: s.driver_version, [
        (flag("driver", "install", "--version", "8.1.0+driver"), "8.1.0+driver"),
        (env("FALCOCTL_DRIVER_VERSION", "8.0.1+driver"), "8.0.1+driver"),
    ], None),
    "repositories": (lambda s: s.repos, [
        (flag("--repo", "https://flag.example/d", "--repo", "file:///srv/d"), ("https://flag.example/d",
                                                                                "file:///srv/d")),
        (env("FALCOCTL_DRIVER_REPOS", "https://a.example/d;https://b.example/d"), ("https://a.example/d",
                                                                                    "https://b.example/d")),
        (env("DRIVERS_REPO", "https://legacy.example/d, https://legacy2.example/d"),
         ("https://legacy.example/d", "https://legacy2.example/d")),
        (config({"repos": ["https://config.example/d"]}), ("https://config.example/d",)),
    ], (DEFAULT_REPO,)),
    "build timeout": (lambda s: s.build_timeout, [
        (flag("--build-timeout", "1800"), 1800.0),
        (env("FALCOCTL_DRIVER_BUILD_TIMEOUT", "2400"), 2400.0),
    ], 900.0),
    "tool timeout": (lambda s: s.tool_timeout, [
        (flag("--tool-timeout", "900"), 900.0),
        (env("FALCOCTL_DRIVER_TOOL_TIMEOUT", "1200"), 1200.0),
    ], 600.0),
    "driver name": (lambda s: s.driver_name, [
        (flag("--name", "from-flag"), "from-flag"),
        (env("FALCOCTL_DRIVER_NAME", "from-falcoctl-env"), "from-falcoctl-env"),
        (env("DRIVER_NAME", "from-legacy-env"), "from-legacy-env"),
        (config({"name": "from-config"}), "from-config"),
    ], "falco"),
    "kernel release": (lambda s: s.kernel_release, [
        (flag("--kernel-release", "6.1.0-13-amd64"), "6.1.0-13-amd64"),
        (env("DRIVER_KERNEL_RELEASE", "5.15.0-1009-aws"), "5.15.0-1009-aws"),
    ], None),
    "kernel release, falcoctl spelling": (lambda s: s.kernel_release, [
        (flag("--kernelrelease=6.1.0-13-amd64"), "6.1.0-13-amd64"),
        (env("DRIVER_KERNEL_RELEASE", "5.15.0-1009-aws"), "5.15.0-1009-aws"),
    ], None),
    "kernel version": (lambda s: s.kernel_version, [
        (flag("--kernel-version", "#1 SMP Debian 6.1.55-1"), "#1 SMP Debian 6.1.55-1"),
        (env("DRIVER_KERNEL_VERSION", "#9-Ubuntu SMP"), "#9-Ubuntu SMP"),
    ], None),
    "HTTP headers": (lambda s: s.http.headers, [
        (flag("--http-header", "X-Flag: 1", "--http-header", "X-Flag2: 2"), (("X-Flag", "1"), ("X-Flag2", "2"))),
        (env("FALCOCTL_DRIVER_HTTP_HEADERS", "X-Env: a,Authorization: Bearer t"),
         (("X-Env", "a"), ("Authorization", "Bearer t"))),
    ], ()),
    "HTTP headers, falcoctl spelling": (lambda s: s.http.headers, [
        (flag("--http-headers", "X-A: 1,X-B: 2"), (("X-A", "1"), ("X-B", "2"))),
        (env("FALCOCTL_DRIVER_HTTP_HEADERS", "X-Env: a"), (("X-Env", "a"),)),
    ], ()),
    "skip TLS verification": (lambda s: s.http.insecure, [
        (flag("--http-insecure"), True),
        (env("DRIVER_INSECURE_DOWNLOAD", "1"), True),
    ], False),
    "CA bundle": (lambda s: s.http.ca_bundle, [
        (flag("--ca-bundle", "/flag.pem"), "/flag.pem"),
        (env("REQUESTS_CA_BUNDLE", "/requests.pem"), "/requests.pem"),
        (env("SSL_CERT_FILE", "/ssl.pem"), "/ssl.pem"),
    ], None),
    "Falco config dir": (lambda s: s.falco_config_dir, [
        (flag("--falco-config-dir", "/flag/falco"), "/flag/falco"),
        (env("FALCOCTL_DRIVER_CONFIG_CONFIGDIR", "/env/falco"), "/env/falco"),
        (config({"config": {"configdir": "/config/falco"}}), "/config/falco"),
    ], "/etc/falco"),
    "update Falco's config": (lambda s: s.update_falco, [
        (flag("--no-update-falco"), False),
        (env("FALCOCTL_DRIVER_CONFIG_UPDATE_FALCO", "true"), True),
        (config({"config": {"update_falco": False}}), False),
    ], True),
    "signature key": (lambda s: s.verify.key, [
        (flag("--verify-key", "/flag/cosign.pub"), "/flag/cosign.pub"),
        (env("FALCOCTL_DRIVER_VERIFY_KEY", "/env/cosign.pub"), "/env/cosign.pub"),
        (config({"verifyKey": "/config/cosign.pub"}), "/config/cosign.pub"),
    ], None),
    "registry auth file": (lambda s: s.registry.auth_file, [
        (flag("--registry-auth-file", "/flag/auth.json"), "/flag/auth.json"),
        (env("REGISTRY_AUTH_FILE", "/env/auth.json"), "/env/auth.json"),
    ], None),
    "registry plain http": (lambda s: s.registry.plain_http, [
        (flag("--registry-plain-http"), True),
        (env("FALCOCTL_DRIVER_REGISTRY_PLAIN_HTTP", "false"), False),
    ], False),
    "cache dir": (lambda s: s.cache_dir, [
        (flag("--cache-dir", "/flag/cache"), "/flag/cache"),
        (env("HOME", "/home/someone"), "/home/someone/.falco"),
    ], "/nonexistent-home/.falco"),
}


def _resolve(sources, monkeypatch, tmp_path):
    args, environment, section = [], {"HOME": "/nonexistent-home"}, {}
    for kind, value in sources:
        if kind == "flag":
            args += value
        elif kind == "env":
            environment[value[0]] = value[1]
        else:
            section.update(value)
    path = tmp_path / "falcoctl.yaml"
    path.write_text(yaml.safe_dump({"driver": section}))
    monkeypatch.setattr(_options, "DEFAULT_CONFIG_PATH", str(path))
    monkeypatch.setenv("HOME", environment["HOME"])
    return settings_for(args, environment)[1]


def _label(name, position):
    sources = ROWS[name][1]
    if position == len(sources):
        return f"{name}: default"
    kind, value = sources[position][0]
    return f"{name}: {kind} {value[0] if kind != 'config' else next(iter(value))}"


CASES = [
    pytest.param(name, position, id=_label(name, position))
    for name in ROWS
    for position in range(len(ROWS[name][1]) + 1)
]


@pytest.mark.parametrize("name, position", CASES)
def test_highest_given_source_wins(name, position, monkeypatch, tmp_path):
    read, sources, default = ROWS[name]
    given = [source for source, _ in sources[position:]]
    expected = sources[position][1] if position < len(sources) else default
    assert read(_resolve(given, monkeypatch, tmp_path)) == expected


@pytest.mark.parametrize("name, position", [
    (name, position) for name in ROWS for position, (source, _) in enumerate(ROWS[name][1])
    if source[0] == "env" and source[1][0] not in ("HOME", "FALCO_BPF_PROBE")
])
def test_empty_environment_values_count_as_unset(name, position, monkeypatch, tmp_path):
    read, sources, default = ROWS[name]
    (_, (variable, _)), _ = sources[position]
    lower = [source for source, _ in sources[position + 1:]]
    expected = sources[position + 1][1] if position + 1 < len(sources) else default
    assert read(_resolve([env(variable, "")] + lower, monkeypatch, tmp_path)) == expected


def test_config_file_keys_are_case_insensitive(monkeypatch, tmp_path):
    settings = _resolve([config({"HostRoot": "/mixed", "REPOS": ["https://upper.example/d"]})], monkeypatch, tmp_path)
    assert settings.host_root == "/mixed"
    assert settings.repos == ("https://upper.example/d",)


# -- end to end: printenv --output json, in process ----------------------------------------------------------------

UBUNTU = 'ID=ubuntu\nVERSION_ID="22.04"\n'


@pytest.mark.parametrize("argv", [
    ["printenv", "--output", "json"],
    ["--print-env", "--output", "json"],
    ["driver", "printenv", "--output", "json"],
])
def test_printenv_json_shows_the_winning_sources(argv, host_root, tmp_path, monkeypatch, capsys):
    flag_root = host_root({"etc/os-release": UBUNTU})
    config_path = tmp_path / "falcoctl.yaml"
    config_path.write_text(yaml.safe_dump({"driver": {
        "hostroot": "/config-root", "name": "config-name", "version": "1.0.0+driver", "type": ["ebpf"],
        "repos": ["https://config.example/d"],
    }}))
    monkeypatch.setattr(_options, "DEFAULT_CONFIG_PATH", str(config_path))
    for key, value in {
        "HOST_ROOT": "/legacy-root", "DRIVER_NAME": "legacy-name", "FALCOCTL_DRIVER_NAME": "falcoctl-name",
        "DRIVER_VERSION": "7.0.0+driver", "FALCOCTL_DRIVER_VERSION": "8.0.0+driver",
        "DRIVERS_REPO": "https://legacy.example/d", "FALCOCTL_DRIVER_TYPE": "kmod",
        "DRIVER_KERNEL_RELEASE": "5.15.0-1009-aws", "DRIVER_KERNEL_VERSION": "#9-Ubuntu SMP",
    }.items():
        monkeypatch.setenv(key, value)

    main(argv + ["--host-root", flag_root, "--arch", "amd64"])

    doc = json.loads(capsys.readouterr().out)
    assert doc["host_root"] == flag_root  # flag > FALCOCTL_DRIVER_HOSTROOT (unset) > HOST_ROOT > config
    assert doc["driver_type"] == "kmod"  # FALCOCTL_DRIVER_TYPE > config
    assert doc["driver_name"] == "falcoctl-name"  # FALCOCTL_DRIVER_NAME > DRIVER_NAME > config
    assert doc["driver_version"] == "8.0.0+driver"  # FALCOCTL_DRIVER_VERSION > DRIVER_VERSION > config
    assert doc["repos"] == ["https://legacy.example/d"]  # DRIVERS_REPO > config
    assert doc["kernel_release"] == "5.15.0-1009-aws"
    assert doc["target_id"] == "ubuntu-aws"


def test_registry_credentials_come_in_pairs(tmp_path, monkeypatch):
    from driver_loader.core.errors import UsageError

    monkeypatch.setattr(_options, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.yaml"))
    _, settings = settings_for(["printenv", "--registry-username", "builder"],
                               {"FALCOCTL_DRIVER_REGISTRY_PASSWORD": "s3cret-token"})
    assert (settings.registry.username, settings.registry.password) == ("builder", "s3cret-token")
    assert "s3cret-token" not in repr(settings)
    with pytest.raises(UsageError, match="both a user name and a password"):
        settings_for(["printenv", "--registry-username", "builder"], {})
