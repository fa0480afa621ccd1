"""click's CliRunner with stdout and stderr apart, on every click the loader supports: click 8.1 mixes stderr into
stdout unless told not to (mix_stderr=False); click 8.2 keeps them apart and no longer takes that argument."""

import inspect

from click.testing import CliRunner


def cli_runner(**kwargs) -> CliRunner:
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        kwargs.setdefault("mix_stderr", False)
    return CliRunner(**kwargs)
