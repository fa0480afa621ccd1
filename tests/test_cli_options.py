"""Every subcommand builds its flags from the shared option groups (cli/commands/_options.py): a flag spelled in two
places drifts. A command's own flags (cleanup's --cache) are the only ones it declares itself."""

import ast
import os

import click
import pytest

from driver_loader.cli.commands import _options
from driver_loader.cli.main import cli

COMMANDS_DIR = os.path.dirname(_options.__file__)
SHARED = _options.LOG_OPTIONS + _options.RESOLUTION_OPTIONS + _options.FETCH_OPTIONS + _options.BUILD_OPTIONS + \
    _options.INSTALL_OPTIONS + _options.PUBLISH_OPTIONS
SHARED_FLAGS = {flag for option in SHARED for decl in option.decls for flag in decl.split("/") if flag.startswith("-")}


def _own_flags(path):
    """The flags a command module declares with click.option(...) itself."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    flags = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "option"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "click"):
            flags += [part for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                      for part in arg.value.split("/") if part.startswith("-")]
    return flags


# What each command accepted before its options came from the shared groups; none may disappear.
EXPECTED_FLAGS = {
    "inspect": {"--output", "--kernel-release", "--kernelrelease", "--arch", "--driver-version", "--version",
                "--host-root", "--log-format", "--log-level", "--help", "-h"},
    "status": {"--host-root", "--kernel-release", "--kernelrelease", "--kernel-version", "--kernelversion", "--arch",
               "--type", "--driver-version", "--version", "--name", "--repo", "--cache-dir", "--config", "--output",
               "--log-format", "--log-level", "--falco-config-dir", "--help", "-h"},
    "cleanup": {"--host-root", "--kernel-release", "--kernelrelease", "--kernel-version", "--kernelversion", "--arch",
                "--type", "--driver-version", "--version", "--name", "--repo", "--cache-dir", "--config", "--output",
                "--log-format", "--log-level", "--tool-timeout", "--cache", "--unload-retries", "--falco-config-dir",
                "--help", "-h"},
}


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(COMMANDS_DIR)
                                        if f.endswith(".py") and f not in ("__init__.py", "_options.py")))
def test_commands_take_shared_flags_from_the_shared_groups(name):
    redeclared = sorted(set(_own_flags(os.path.join(COMMANDS_DIR, name))) & SHARED_FLAGS)
    assert redeclared == [], f"{name} declares shared flags itself; use _options.shared(...) or a group"


@pytest.mark.parametrize("command_name", sorted(EXPECTED_FLAGS))
def test_no_flag_disappears_or_changes_meaning(command_name):
    parent = click.Context(cli, **cli.context_settings)
    command = cli.get_command(parent, command_name)
    context = click.Context(command, parent=parent)
    flags = {flag for param in command.get_params(context) for flag in param.opts + param.secondary_opts
             if flag.startswith("-")}
    assert flags == EXPECTED_FLAGS[command_name]
    by_name = {option.name: option for option in SHARED}
    for param in command.params:
        if param.name in by_name and isinstance(param, click.Option):
            reference = click.Option(list(by_name[param.name].decls), **by_name[param.name].attrs)
            assert (param.opts, param.secondary_opts, param.type, param.default, param.multiple, param.is_flag) == (
                reference.opts, reference.secondary_opts, reference.type, reference.default, reference.multiple,
                reference.is_flag), param.name


def test_a_shared_option_is_found_by_name_and_keeps_its_flags_when_reworded():
    option = _options.shared("kernel_release", help="another wording")
    assert option.decls == ("--kernel-release", "--kernelrelease", "kernel_release")
    assert option.attrs["help"] == "another wording"
    assert _options.shared("kernel_release").attrs["help"] != "another wording"
    assert _options.shared("version_fallback").name == "version_fallback"
    with pytest.raises(KeyError):
        _options.shared("no_such_option")
