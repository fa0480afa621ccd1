"""The Settings a command line resolves to, without running the command: the argv goes through main()'s
translation, then through the shared click options into settings_from_flags."""

import click

from driver_loader.cli.commands import _options
from driver_loader.cli.legacy import translate


def settings_for(argv, env):
    """(subcommand, Settings) for `argv` under `env`. The config file is whatever _options.DEFAULT_CONFIG_PATH
    names (tests point it at a temporary file) unless the argv gives --config."""
    words = list(translate(argv).argv)
    while words[0].startswith("--log-"):
        words = words[2:]
    command, rest = words[0], words[1:]
    seen = []

    def capture(**flags):
        seen.append(_options.settings_from_flags(flags, env))

    for apply in (_options.resolution_options, _options.fetch_options, _options.build_options,
                  _options.install_options):
        capture = apply(capture)
    click.command(command)(capture).main(args=rest, standalone_mode=False)
    return command, seen[0]
