"""The command line: dispatch to one module per subcommand, and turn errors into one exit status and a message.

Legacy (`falco-driver-loader [module|bpf] --compile ...`) and image-entrypoint forms are translated to subcommands
by driver_loader.cli.legacy before click sees them.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import click

from driver_loader import __version__
from driver_loader.cli.commands import SUBCOMMANDS, _options
from driver_loader.core.errors import ExitCode, LoaderError
from driver_loader.output import log as logging_setup


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> List[str]:
        return [name for name in SUBCOMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        return self._load(name) if name in SUBCOMMANDS else None

    @staticmethod
    def _load(name: str) -> Optional[click.Command]:
        import importlib

        try:
            module = importlib.import_module(f"driver_loader.cli.commands.{SUBCOMMANDS[name]}")
        except ModuleNotFoundError as exc:
            if exc.name == f"driver_loader.cli.commands.{SUBCOMMANDS[name]}":
                return None
            raise
        return module.command


_EPILOG = """\b
The legacy and image forms work too, and mean install unless they say otherwise:
  falco-driver-loader [module|bpf|kmod|ebpf|modern_ebpf|auto] [--compile] [--download]
                      [--clean] [--print-env] [--http-insecure] [--kernel-release X]
  falco-driver-loader driver install|printenv|cleanup ...   (falcoctl's spelling)
Exit codes: 0 ok, 1 runtime failure, 2 usage, 3 no driver, 4 verification failed,
5 load failed, 6 host unsupported for the requested driver types."""


@click.group(cls=_LazyGroup, epilog=_EPILOG,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "-V", "--version", prog_name="falco-driver-loader")
@_options.log_options
def cli() -> None:
    """Put the right Falco driver on this node: detect the host, download or build the kernel module or eBPF probe,
    verify it, and load it (or hand it to Falco).

    Run without a subcommand to install, as the legacy loader and the falco-driver-loader image did.
    """


def _report(error: LoaderError) -> None:
    if logging_setup.effective_format() == "json":
        logging_setup.get_logger().error(error.message, exit_code=int(error.exit_code), tried=list(error.tried),
                                         hint=error.hint)
        return
    lines = [f"error: {error.message}"]
    lines += [f"  tried: {item}" for item in error.tried]
    if error.hint:
        lines.append(f"  next: {error.hint}")
    click.echo("\n".join(lines), err=True)


def main(argv: Optional[List[str]] = None) -> None:
    from driver_loader.cli.legacy import translate_argv

    args = translate_argv(list(sys.argv[1:] if argv is None else argv))
    try:
        cli.main(args=args, prog_name="falco-driver-loader", standalone_mode=False)
    except LoaderError as error:
        if logging_setup.is_debug():
            import traceback

            traceback.print_exc()
        _report(error)
        sys.exit(int(error.exit_code))
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(int(ExitCode.RUNTIME))
    except click.ClickException as error:
        error.show()
        sys.exit(int(ExitCode.USAGE))
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as error:  # an internal bug: still one line and exit 1
        if logging_setup.is_debug():
            import traceback

            traceback.print_exc()
        click.echo(f"internal error: {type(error).__name__}: {error}", err=True)
        click.echo("  next: rerun with --log-level debug for the traceback, and report it", err=True)
        sys.exit(int(ExitCode.RUNTIME))
