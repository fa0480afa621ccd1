"""packaging/: the container image (checked statically: no Docker engine is needed), the systemd units (checked
with `systemd-analyze verify`), the Kubernetes manifests (against the Helm chart's contract and what the loader
reads), and the single-file build (built and run)."""

import configparser
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml
from cli_settings import settings_for

from driver_loader.cli.legacy import DRIVER_WORDS, translate
from driver_loader.core.doctor import HOST_MOUNTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGING = os.path.join(REPO, "packaging")
DOCKERFILE = os.path.join(PACKAGING, "docker", "Dockerfile")
SYSTEMD = os.path.join(PACKAGING, "systemd")
INSTALLED_CLI = "/usr/local/bin/falco-driver-loader"
IMAGE_NAME = "falco-driver-loader"

# The Helm chart's driver-loader init container (charts/falco/templates/pod-template.tpl): mount path -> read-only.
CHART_MOUNTS = {
    "/root/.falco": False,
    "/host/proc": True,
    "/host/boot": True,
    "/host/lib/modules": False,
    "/host/usr": True,
    "/host/etc": True,
    "/etc/falco/config.d": False,
}


# -- the container image ---------------------------------------------------------------------------------------------

def dockerfile_instructions(text):
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    instructions, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


@pytest.fixture(scope="module")
def dockerfile():
    with open(DOCKERFILE) as stream:
        return dockerfile_instructions(stream.read())


def apt_installed(instructions):
    packages = []
    for keyword, rest in instructions:
        if keyword != "RUN":
            continue
        for command in rest.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["apt-get", "install"]:
                packages += [w for w in words[2:] if not w.startswith("-")]
    return packages


def test_image_is_debian_based(dockerfile):
    bases = [rest for keyword, rest in dockerfile if keyword == "FROM"]
    assert bases and all(base.split()[0].startswith("debian:") for base in bases)


def final_stage(instructions):
    """The instructions of the last stage (the image itself)."""
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    return instructions[starts[-1]:]


def test_image_has_python_and_the_build_toolchain(dockerfile):
    packages = set(apt_installed(final_stage(dockerfile)))
    required = {"python3", "ca-certificates", "gcc", "make", "dkms", "kmod", "libc6-dev", "clang", "llvm",
                "libelf-dev", "xz-utils", "zstd"}
    assert required <= packages, required - packages


# Each runtime dependency in pyproject.toml, as the Debian 12 package the image takes it from (name, version there).
DEBIAN_PYTHON_PACKAGES = {
    "requests": ("python3-requests", "2.28.1"),
    "packaging": ("python3-packaging", "23.0"),
    "pyelftools": ("python3-pyelftools", "0.29"),
    "click": ("python3-click", "8.1.3"),
    "structlog": ("python3-structlog", "22.3.0"),
    "PyYAML": ("python3-yaml", "6.0"),
    "cryptography": ("python3-cryptography", "38.0.4"),
}
# Optional libraries the image carries beyond pyproject.toml's dependencies: zstandard for .ko.zst modules, nacl to
# sign with cosign's encrypted key (cosign.key).
IMAGE_OPTIONAL_PYTHON_PACKAGES = {"python3-zstandard", "python3-nacl"}


def runtime_dependencies():
    """(name, lower bound) of each runtime dependency in pyproject.toml."""
    with open(os.path.join(REPO, "pyproject.toml")) as stream:
        block = re.search(r"^dependencies = \[(.*?)^\]", stream.read(), re.MULTILINE | re.DOTALL).group(1)
    return [re.match(r"([A-Za-z0-9_.-]+)>=([0-9.]+)$", spec).groups() for spec in re.findall(r'"([^"]+)"', block)]


def test_image_takes_every_runtime_dependency_from_debian(dockerfile):
    """The image's Python libraries are Debian's: one python3-* package per dependency in pyproject.toml, at a
    Debian 12 version that meets its lower bound, and none beyond them but the optional zstandard (for .ko.zst
    modules) and nacl (for cosign.key)."""
    from packaging.version import Version

    installed = {p for p in apt_installed(final_stage(dockerfile)) if p.startswith("python3-")}
    wanted = set()
    for name, floor in runtime_dependencies():
        assert name in DEBIAN_PYTHON_PACKAGES, f"{name}: which Debian package provides it? (add it here and to the Dockerfile)"
        package, debian_version = DEBIAN_PYTHON_PACKAGES[name]
        assert Version(debian_version) >= Version(floor), (name, floor, debian_version)
        wanted.add(package)
    assert installed == wanted | IMAGE_OPTIONAL_PYTHON_PACKAGES, installed ^ (wanted | IMAGE_OPTIONAL_PYTHON_PACKAGES)


def test_image_installs_the_loader_without_an_index(dockerfile):
    """No instruction reaches PyPI: the loader is installed from the build context with --no-index --no-deps (and
    Debian's setuptools: --no-build-isolation), and no stage makes a virtualenv that would fetch pip's own."""
    pip_runs = [rest for keyword, rest in dockerfile if keyword == "RUN" and re.search(r"\bpip3? install\b", rest)]
    assert pip_runs
    for rest in pip_runs:
        for command in rest.split("&&"):
            words = shlex.split(command)
            if "install" in words and words[0] in ("pip", "pip3"):
                assert {"--no-index", "--no-deps", "--no-build-isolation"} <= set(words), command
    runs = " ".join(rest for keyword, rest in dockerfile if keyword == "RUN")
    assert "venv" not in runs and "ensurepip" not in runs and "index-url" not in runs
    assert "python3-pip" not in apt_installed(final_stage(dockerfile))  # pip stays in the install stage


def test_image_packages_exist_in_debian(dockerfile):
    if shutil.which("apt-cache") is None:
        pytest.skip("apt-cache is not available: cannot check the image's package names against Debian")
    if subprocess.run(["apt-cache", "show", "gcc"], capture_output=True).returncode != 0:
        pytest.skip("apt lists are empty (run apt-get update): cannot check the image's package names")
    packages = apt_installed(dockerfile)
    result = subprocess.run(["apt-cache", "show", "--no-all-versions", *packages], capture_output=True, text=True)
    known = set(re.findall(r"^Package: (\S+)$", result.stdout, re.MULTILINE))
    assert set(packages) <= known, set(packages) - known


def test_image_environment(dockerfile):
    env = {}
    for keyword, rest in dockerfile:
        if keyword == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
    assert env["HOST_ROOT"] == "/host"
    assert env["HOME"] == "/root"
    runs = " ".join(rest for keyword, rest in dockerfile if keyword == "RUN")
    assert "ln -s $HOST_ROOT/lib/modules /lib/modules" in runs


def test_image_entrypoint_is_the_cli_in_entrypoint_mode(dockerfile):
    entrypoints = [json.loads(rest) for keyword, rest in dockerfile if keyword == "ENTRYPOINT"]
    assert entrypoints == [[IMAGE_NAME, "--entrypoint"]]
    with open(os.path.join(REPO, "pyproject.toml")) as stream:
        assert re.search(rf'^{IMAGE_NAME} = "driver_loader.cli.main:main"$', stream.read(), re.MULTILINE)
    # pip's console script lands in /usr/local/bin (on PATH), copied from the install stage.
    copies = [shlex.split(rest) for keyword, rest in final_stage(dockerfile) if keyword == "COPY"]
    assert ["--from=install", "/staging/usr/local", "/usr/local"] in copies
    # The chart's arguments, after the entrypoint's own.
    translation = translate(["--entrypoint", "--compile", "kmod"])
    assert translation.link_sources and translation.argv[0] == "install"


def test_image_copy_sources_exist_and_suffice(dockerfile):
    copied = []
    stages = [rest.split()[-1] for keyword, rest in dockerfile if keyword == "FROM" and " AS " in rest.upper()]
    for keyword, rest in dockerfile:
        if keyword == "COPY":
            words = shlex.split(rest)
            if words[0].startswith("--from="):
                assert words[0][len("--from="):] in stages, "copies only from the build context or an earlier stage"
                continue
            copied += words[:-1]
    for source in copied:
        assert os.path.exists(os.path.join(REPO, source)), source
    with open(os.path.join(REPO, "pyproject.toml")) as stream:
        readme = re.search(r'^readme = "([^"]+)"', stream.read(), re.MULTILINE).group(1)
    assert readme in copied and "pyproject.toml" in copied and "driver_loader" in copied
    # .dockerignore keeps the context to what is copied (not the .venv, not bytecode).
    with open(os.path.join(REPO, ".dockerignore")) as stream:
        rules = [line.strip() for line in stream if line.strip() and not line.startswith("#")]
    assert rules[0] == "*" and {f"!{source}" for source in copied} <= set(rules)


# -- systemd ---------------------------------------------------------------------------------------------------------

def unit_files():
    found = []
    for directory, _, names in os.walk(SYSTEMD):
        found += [os.path.join(directory, n) for n in names if n.endswith((".service", ".conf"))]
    return sorted(found)


def read_unit(path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return parser


def test_loader_unit_is_a_oneshot_before_falco():
    unit = read_unit(os.path.join(SYSTEMD, "falco-driver-loader.service"))
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["RemainAfterExit"] == "yes"
    before = unit["Unit"]["Before"].split()
    for falco_unit in ("falco-kmod-inject.service", "falco-kmod.service", "falco-bpf.service",
                       "falco-modern-bpf.service"):
        assert falco_unit in before
    required_by = unit["Install"]["RequiredBy"].split()
    assert {"falco-kmod-inject.service", "falco-bpf.service", "falco-modern-bpf.service"} <= set(required_by)


@pytest.mark.parametrize("path, key, driver_type", [
    ("falco-driver-loader.service", "ExecStart", None),
    ("falco-kmod-inject.service.d/10-driver-loader.conf", "ExecStartPre", "kmod"),
    ("falco-bpf.service.d/10-driver-loader.conf", "ExecStartPre", "ebpf"),
    ("falco-modern-bpf.service.d/10-driver-loader.conf", "ExecStartPre", "modern_ebpf"),
])
def test_units_run_install_with_valid_options(path, key, driver_type, monkeypatch, tmp_path):
    from driver_loader.cli.commands import _options

    monkeypatch.setattr(_options, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.yaml"))
    words = shlex.split(read_unit(os.path.join(SYSTEMD, path))["Service"][key])
    assert words[0] == INSTALLED_CLI
    command, settings = settings_for(words[1:], {})
    assert command == "install"
    if driver_type is not None:
        assert [str(t) for t in settings.driver_types] == [driver_type]
    if driver_type in (None, "kmod"):
        assert settings.persist  # so that falco-kmod-inject.service's `modprobe falco` finds the module


FALCO_UNITS = {  # the units Falco's packages ship, reduced to what ordering and verification need
    "falco-kmod-inject.service": "[Unit]\nDescription=Falco: kmod injection\nPartOf=falco-kmod.service\n"
                                 "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={modprobe} falco\n",
    "falco-kmod.service": "[Unit]\nDescription=Falco with kmod\nRequires=falco-kmod-inject.service\n"
                          "After=falco-kmod-inject.service\n[Service]\nType=simple\nExecStart={falco}\n",
    "falco-bpf.service": "[Unit]\nDescription=Falco with eBPF\n[Service]\nType=simple\nExecStart={falco}\n",
    "falco-modern-bpf.service": "[Unit]\nDescription=Falco with modern eBPF\n[Service]\nType=simple\n"
                                "ExecStart={falco}\n",
}


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`): the units were NOT verified")
    units = tmp_path / "units"
    shutil.copytree(SYSTEMD, units)
    stub = tmp_path / "bin" / "falco-driver-loader"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for path in units.rglob("*"):
        if path.is_file():  # verify needs every ExecStart program to exist: point ours at the stub
            path.write_text(path.read_text().replace(INSTALLED_CLI, str(stub)))
    for name, text in FALCO_UNITS.items():
        (units / name).write_text(text.format(modprobe=stub, falco=stub))
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:", "SYSTEMD_LOG_COLOR": "0"}
    result = subprocess.run([analyze, "verify", *sorted(str(p) for p in units.glob("*.service"))],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert str(units) not in result.stderr, result.stderr  # no warning about our files (unknown keys, ...)


def test_systemd_analyze_verify_catches_a_missing_program(tmp_path):
    """The verification above can fail: a unit whose program does not exist is rejected."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`)")
    if os.path.exists(INSTALLED_CLI):
        pytest.skip(f"{INSTALLED_CLI} exists on this machine")
    unit = tmp_path / "falco-driver-loader.service"
    shutil.copy(os.path.join(SYSTEMD, "falco-driver-loader.service"), unit)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"}, timeout=120)
    assert result.returncode != 0 and INSTALLED_CLI in result.stderr


# -- Kubernetes ------------------------------------------------------------------------------------------------------

def load_yaml(name):
    with open(os.path.join(PACKAGING, "kubernetes", name)) as stream:
        return list(yaml.safe_load_all(stream))


def pod_spec():
    (daemonset,) = [d for d in load_yaml("daemonset.yaml") if d["kind"] == "DaemonSet"]
    return daemonset["spec"]["template"]["spec"]


def loader_container(spec):
    (container,) = [c for c in spec["initContainers"] if IMAGE_NAME in c["image"]]
    return container


def test_daemonset_parses_and_selects_its_pods():
    documents = load_yaml("daemonset.yaml")
    assert [d["kind"] for d in documents] == ["Namespace", "DaemonSet"]
    daemonset = documents[1]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= \
        daemonset["spec"]["template"]["metadata"]["labels"].items()


def test_daemonset_loader_follows_the_chart_contract():
    spec = pod_spec()
    loader = loader_container(spec)
    assert {"name": "HOST_ROOT", "value": "/host"} in loader["env"]
    mounts = {m["mountPath"]: m for m in loader["volumeMounts"]}
    for path, read_only in CHART_MOUNTS.items():
        assert path in mounts, path
        assert mounts[path].get("readOnly", False) is read_only, path
    volumes = {v["name"]: v for v in spec["volumes"]}
    for path, mount in mounts.items():
        volume = volumes[mount["name"]]
        if path.startswith("/host/"):
            assert volume["hostPath"]["path"] == path[len("/host"):], path
        else:
            assert "emptyDir" in volume, path
    assert loader["securityContext"]["privileged"] is True


def test_daemonset_provides_everything_the_loader_reads():
    """Each host path the loader reads under its host root is mounted; its cache and Falco's config.d are the
    directories shared with Falco."""
    spec = pod_spec()
    loader = loader_container(spec)
    mounted = {m["mountPath"] for m in loader["volumeMounts"]}
    for label, _, _, _ in HOST_MOUNTS:
        assert f"/host/{label}" in mounted, label
    _, settings = settings_for(["install"], {e["name"]: e["value"] for e in loader["env"]})
    assert settings.host_root == "/host"
    falco = next(c for c in spec["containers"] if c["name"] == "falco")
    shared = {m["mountPath"]: m["name"] for m in falco["volumeMounts"]}
    cache_dir = "/root/.falco"  # $HOME/.falco with the image's HOME=/root
    config_d = os.path.join(settings.falco_config_dir, "config.d")
    for path in (cache_dir, config_d):
        assert path in mounted and shared.get(path) == next(m["name"] for m in loader["volumeMounts"]
                                                            if m["mountPath"] == path)


def test_daemonset_arguments_are_the_chart_form():
    args = loader_container(pod_spec())["args"]
    assert args[-1] in DRIVER_WORDS
    assert translate(args).argv[:2] == ("--log-format", "json")


def test_helm_values_swap_in_our_image():
    (values,) = load_yaml("falco-chart-values.yaml")
    init = values["driver"]["loader"]["initContainer"]
    assert values["driver"]["loader"]["enabled"] is True
    assert init["image"]["repository"].endswith(IMAGE_NAME)
    assert set(init["image"]) == {"registry", "repository", "tag", "pullPolicy"}
    assert isinstance(init["env"], list) and isinstance(init["args"], list)
    for env in init["env"]:
        assert set(env) >= {"name"}


# The Falco chart this packaging follows: verbatim pieces of falcosecurity/charts at tag falco-9.1.0 (see the
# directory's README.md for the commit).
CHART_VERSION = "9.1.0"
CHART = os.path.join(REPO, "tests", "data", f"falco-chart-{CHART_VERSION}")


def chart_text(name):
    with open(os.path.join(CHART, name)) as stream:
        return stream.read()


def chart_kinds():
    """(accepted kinds, aliases, removed kinds), from the chart's own guards in _helpers.tpl."""
    text = chart_text("driver-kinds.tpl")

    def listed(variable):
        return re.findall(r'"([^"]+)"', re.search(rf"\${variable} := list ([^}}]*)", text).group(1))

    return listed("supportedDrivers"), listed("aliasDrivers"), listed("removedDriverKinds")


def chart_appended_kind(kind):
    """The word the chart's init container template appends for `kind` (module -> kmod, modern-bpf -> modern_ebpf)."""
    text = chart_text("driver-loader-init-container.tpl")
    text = text[text.index("  args:"):text.index("  resources:")]  # the args block only
    for alias, word in re.findall(r'eq \.Values\.driver\.kind "([^"]+)"\s*}}\s*- (\S+)', text):
        if alias == kind:
            return word
    return kind


def chart_init_container_mounts():
    """mount path -> read-only, from the template's volumeMounts block (plain YAML there)."""
    text = chart_text("driver-loader-init-container.tpl")
    block = re.search(r"^  volumeMounts:\n((?:    .*\n)+)", text, re.MULTILINE).group(1)
    return {m["mountPath"]: m.get("readOnly", False) for m in yaml.safe_load(block)}


def test_chart_mounts_are_the_charts():
    assert chart_init_container_mounts() == CHART_MOUNTS


def test_chart_kinds_fixture_reads_as_the_chart_says():
    """The facts the tests below rely on, as read from the chart's templates."""
    accepted, aliases, removed = chart_kinds()
    assert (accepted, aliases, removed) == (["kmod", "modern_ebpf", "auto"], ["module", "modern-bpf"],
                                            ["ebpf", "gvisor"])
    assert [chart_appended_kind(k) for k in ("module", "modern-bpf", "kmod", "auto")] == \
        ["kmod", "modern_ebpf", "kmod", "auto"]


def value_paths(values, prefix=()):
    """Every key path a values file sets (lists and scalars are leaves)."""
    for key, value in values.items():
        path = (*prefix, key)
        yield path
        if isinstance(value, dict):
            yield from value_paths(value, path)


def chart_has_key(chart_values, path):
    """The chart declares `path`, or declares a free-form map (`{}`) above it (e.g. securityContext)."""
    node = chart_values
    for key in path:
        if not isinstance(node, dict):
            return False
        if not node and node is not chart_values:
            return True  # a `{}` default: any key below it is the user's
        if key not in node:
            return False
        node = node[key]
    return True


def test_helm_values_keys_exist_in_the_chart():
    """Each key falco-chart-values.yaml sets is one the chart's values.yaml has (a misspelt key is silently
    ignored by Helm, so the image would not be swapped in)."""
    chart_values = yaml.safe_load(chart_text("values.yaml"))
    (values,) = load_yaml("falco-chart-values.yaml")
    unknown = [".".join(path) for path in value_paths(values) if not chart_has_key(chart_values, path)]
    assert not unknown


def test_helm_values_key_check_catches_a_misspelt_key():
    chart_values = yaml.safe_load(chart_text("values.yaml"))
    assert chart_has_key(chart_values, ("driver", "loader", "initContainer", "securityContext", "privileged"))
    assert not chart_has_key(chart_values, ("driver", "loader", "initContainers"))
    assert not chart_has_key(chart_values, ("driver", "ebpf"))


def test_helm_values_kind_is_one_the_chart_accepts():
    accepted, aliases, removed = chart_kinds()
    (values,) = load_yaml("falco-chart-values.yaml")
    assert values["driver"]["kind"] in accepted + aliases
    assert values["driver"]["kind"] not in removed


@pytest.mark.parametrize("chart_kind", chart_kinds()[0] + chart_kinds()[1])
def test_helm_values_arguments_with_every_kind_the_chart_appends(chart_kind):
    """For each kind chart 9.x accepts, the init container's command line (the values' args, then the word the
    chart appends) is an install of that driver type."""
    (values,) = load_yaml("falco-chart-values.yaml")
    args = values["driver"]["loader"]["initContainer"]["args"]
    appended = chart_appended_kind(chart_kind)
    argv = translate(["--entrypoint", *args, appended]).argv
    assert argv[argv.index("install"):argv.index("install") + 3] == ("install", "--type", appended)


def test_chart_removed_kinds_are_not_passed():
    """Chart 9.0.0 dropped ebpf and gvisor: neither the kind nor the init container's args name them."""
    _, _, removed = chart_kinds()
    (values,) = load_yaml("falco-chart-values.yaml")
    words = [values["driver"]["kind"], *values["driver"]["loader"]["initContainer"]["args"]]
    assert not set(words) & set(removed)


def test_daemonset_validates_against_the_kubernetes_schema():
    """Every document in daemonset.yaml, against the current Kubernetes API schema (kubernetes-validate ships the
    schemas: offline), strictly: an unknown field fails."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    for document in load_yaml("daemonset.yaml"):
        kubernetes_validate.validate(document, version, strict=True)


def test_daemonset_schema_check_catches_a_misspelt_field():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    daemonset = next(d for d in load_yaml("daemonset.yaml") if d["kind"] == "DaemonSet")
    loader = loader_container(daemonset["spec"]["template"]["spec"])
    loader["volumeMount"] = loader.pop("volumeMounts")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, kubernetes_validate.latest_version(), strict=True)


ENV_NAME = re.compile(r"\b(FALCOCTL_[A-Z_]*[A-Z]|DRIVERS?_[A-Z_]*[A-Z]|HOST_ROOT|HTTPS?_PROXY|NO_PROXY)\b")
# Set by the Helm chart for falcoctl's ConfigMap editing, which this loader deliberately does not do.
IGNORED_CHART_ENV = {"FALCOCTL_DRIVER_CONFIG_NAMESPACE", "FALCOCTL_DRIVER_CONFIG_CONFIGMAP"}


def test_every_environment_variable_named_in_packaging_is_read_by_the_loader():
    source = ""
    for directory, _, names in os.walk(os.path.join(REPO, "driver_loader")):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(directory, name)) as stream:
                    source += stream.read()
    named = set()
    for directory, _, names in os.walk(PACKAGING):
        for name in names:
            with open(os.path.join(directory, name)) as stream:
                named |= set(ENV_NAME.findall(stream.read()))
    proxies = {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"}  # read by requests itself
    unknown = {n for n in named - proxies - IGNORED_CHART_ENV if f'"{n}"' not in source}
    assert not unknown
    assert {"HOST_ROOT", "FALCOCTL_DRIVER_REPOS"} <= named


# -- the single-file build -------------------------------------------------------------------------------------------

def interpreters():
    """This Python, and one of each other python3.N (N >= 9) found on PATH or installed by pyenv, that runs."""
    found = {f"{sys.version_info[0]}.{sys.version_info[1]}": sys.executable}
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for minor in range(9, 20):
        candidates = [shutil.which(f"python3.{minor}")] + sorted(
            glob.glob(os.path.join(pyenv_root, "versions", f"3.{minor}.*", "bin", f"python3.{minor}")))
        for path in filter(None, candidates):
            if f"3.{minor}" in found:
                break
            if subprocess.run([path, "-c", "import ssl, ctypes, zipimport"], capture_output=True).returncode == 0:
                found[f"3.{minor}"] = path
    return [pytest.param(path, id=version) for version, path in sorted(found.items())]


@pytest.fixture(scope="module")
def zipapp_file(tmp_path_factory):
    output = tmp_path_factory.mktemp("zipapp") / "falco-driver-loader.pyz"
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "build-zipapp"), "-o", str(output)],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "pip download failed" in result.stderr:
        pytest.skip(f"the single-file build was NOT tested: pip could not download the dependencies: "
                    f"{result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    return output


@pytest.mark.parametrize("python", interpreters())
def test_zipapp_runs_printenv(zipapp_file, python, host_root, tmp_path):
    root = host_root({"etc/os-release": 'ID=ubuntu\nVERSION_ID="22.04"\n'})
    config = tmp_path / "falcoctl.yaml"  # read through the bundled pure-Python PyYAML
    config.write_text("driver:\n  version: 8.0.0+driver\n  repos: [https://mirror.example/d]\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}  # no site-packages of ours
    result = subprocess.run(
        [python, "-I", str(zipapp_file), "printenv", "--host-root", root, "--kernel-release", "5.15.0-1009-aws",
         "--kernel-version", "#9-Ubuntu SMP", "--arch", "amd64", "--type", "kmod", "--config", str(config)],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        'DRIVER="kmod"', 'DRIVERS_REPO="https://mirror.example/d"', 'DRIVER_VERSION="8.0.0+driver"',
        'DRIVER_NAME="falco"', f'HOST_ROOT="{root}"', 'TARGET_ID="ubuntu-aws"', 'ARCH="x86_64"',
        'KERNEL_RELEASE="5.15.0-1009-aws"', 'KERNEL_VERSION="#9-Ubuntu SMP"',
        'FIXED_KERNEL_RELEASE="5.15.0-1009-aws"', 'FIXED_KERNEL_VERSION="9"',
    ]


def test_zipapp_is_self_contained(zipapp_file):
    import zipfile

    with zipfile.ZipFile(zipapp_file) as archive:
        names = archive.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {"__main__.py", "driver_loader", "requests", "urllib3", "certifi", "idna", "charset_normalizer", "click",
            "structlog", "packaging", "elftools", "yaml"} <= tops
    assert not [n for n in names if n.endswith((".so", ".pyd"))]  # pure Python: runs on any CPython >= 3.9
    assert not [n for n in names if "__pycache__" in n]


def test_zipapp_leaves_out_cryptography_and_says_so(zipapp_file, tmp_path):
    """cryptography has no pure-Python part, so the single file has none: using a signature key there is exit 2
    naming the package, not a traceback. (-S: no site-packages, as on a host without python3-cryptography.)"""
    import zipfile

    with zipfile.ZipFile(zipapp_file) as archive:
        assert not [n for n in archive.namelist() if n.startswith(("cryptography/", "cffi/", "nacl/"))]
    key = tmp_path / "cosign.pub"
    key.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    probe = (f"import sys; sys.path.insert(0, {str(zipapp_file)!r})\n"
             "from driver_loader.artifacts import signature\n"
             "try:\n"
             f"    signature.load_public_key({str(key)!r})\n"
             "except signature.SignatureUnavailable as error:\n"
             "    print(int(error.exit_code), error.hint)\n")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("2 ") and "python3-cryptography" in result.stdout, result.stdout
