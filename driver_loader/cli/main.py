"""The command line: dispatch to one module per subcommand, and turn errors into one exit status and a message.

Legacy (`falco-driver-loader [module|bpf] --compile ...`) and image-entrypoint forms are translated to subcommands
by driver_loader.cli.legacy before click sees them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Iterator, List, Optional, Sequence

import click

from driver_loader import __version__
from driver_loader.cli.commands import SUBCOMMANDS, _options
from driver_loader.core.errors import ExitCode, LoaderError
from driver_loader.output import log as logging_setup
from driver_loader.output.boundary import OutputClosed


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


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwind (every `finally` and `with` removes what it made), then exit 128 + signal.
    Not a KeyboardInterrupt, so that click does not turn it into "Aborted!" and exit 1."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


INTERRUPT_SIGNALS = {"SIGINT": 130, "SIGTERM": 143}


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted for the duration of the block (main thread only)."""

    def handler(signum: int, _frame: object) -> None:
        for number in saved:  # a second Ctrl-C must not interrupt the cleanup the first one started
            signal.signal(number, signal.SIG_IGN)
        raise Interrupted(signum)

    saved = {}
    for name in INTERRUPT_SIGNALS:
        number = getattr(signal, name)
        try:
            saved[number] = signal.signal(number, handler)
        except ValueError:  # not the main thread: leave the defaults
            break
    try:
        yield
    finally:
        for number, previous in saved.items():
            signal.signal(number, previous)


def _json_logs() -> bool:
    return logging_setup.effective_format() == "json"


def _traceback_text() -> Optional[str]:
    """The current exception's traceback, with --log-level debug only."""
    if not logging_setup.is_debug():
        return None
    import traceback

    return traceback.format_exc().rstrip("\n")


def _report(message: str, *, exit_code: int, tried: Sequence[str] = (), hint: str = "",
            prefix: str = "error") -> None:
    """One failure on stderr: `prefix: message`, `tried:` and `next:` lines, the traceback first with --log-level
    debug; with --log-format json, one JSON object holding all of it."""
    trace = _traceback_text()
    if _json_logs():
        fields: dict = {"exit_code": exit_code, "tried": list(tried), "hint": hint}
        if trace:
            fields["traceback"] = trace
        text = message if prefix == "error" else f"{prefix}: {message}"
        logging_setup.get_logger().error(text, **fields)
        return
    lines = [trace] if trace else []
    lines.append(f"{prefix}: {message}")
    lines += [f"  tried: {item}" for item in tried]
    if hint:
        lines.append(f"  next: {hint}")
    click.echo("\n".join(lines), err=True)


def _interrupted(signum: int) -> int:
    _remove_own_partials()
    name = signal.Signals(signum).name
    code = INTERRUPT_SIGNALS.get(name, 128 + signum)
    message = f"interrupted by {name}: stopped before finishing; nothing partial was kept"
    if _json_logs():
        logging_setup.get_logger().error(message, exit_code=code)
    else:
        click.echo(message, err=True)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null, and drop what waits in its buffer, so that nothing raises again at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


def _remove_own_partials() -> None:
    """Every `finally` has already removed what it made; this also catches a temp file the signal caught between
    its creation and the block that guards it. Only this process's own temp files (the pid is in their name)."""
    from driver_loader.artifacts.cache import TEMP_PREFIX
    from driver_loader.cli.commands._options import CACHE_DIRS_IN_USE

    mine = f"{TEMP_PREFIX}{os.getpid()}-"
    for root in dict.fromkeys(CACHE_DIRS_IN_USE):
        depth = root.rstrip("/").count("/")
        for directory, dirnames, filenames in os.walk(root, followlinks=False):
            if directory.rstrip("/").count("/") - depth >= 3:  # <root>/<version>/<arch>/<file>
                dirnames.clear()
            for name in filenames:
                if name.startswith(mine):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(directory, name))


def _early_log_options(argv: Sequence[str]) -> None:
    """--log-format and --log-level, applied before anything else, so that a failure before click has parsed the
    command line (a legacy usage error) is already in the requested format."""
    wanted = {}
    for index, arg in enumerate(argv):
        option, sep, value = arg.partition("=")
        if option not in ("--log-format", "--log-level"):
            continue
        if not sep:
            value = argv[index + 1] if index + 1 < len(argv) else ""
        wanted[option] = value.lower()
    if wanted.get("--log-format") in ("auto", "text", "json", "color"):
        logging_setup.setup(log_format=wanted["--log-format"])
    if wanted.get("--log-level") in ("trace", "debug", "info", "warn", "warning", "error"):
        logging_setup.setup(log_level=wanted["--log-level"])


def main(argv: Optional[List[str]] = None) -> None:
    """The program: every byte written to stdout and stderr goes through the redacting boundary, SIGINT and
    SIGTERM unwind cleanly, and every failure ends in one message and its documented exit code."""
    from driver_loader.output import boundary

    raw = list(sys.argv[1:] if argv is None else argv)
    _early_log_options(raw)
    boundary.learn(raw, os.environ)
    with boundary.guarded_streams(json_logs=_json_logs):
        try:
            with _interrupts():
                code = _run(raw)
        except Interrupted as stop:  # a signal between the inner handlers and here
            code = _interrupted(stop.signum)
    if code:
        sys.exit(code)


def _run(raw: List[str]) -> int:
    from driver_loader.cli.legacy import translate_argv

    try:
        args = translate_argv(raw)
        outcome = cli.main(args=args, prog_name="falco-driver-loader", standalone_mode=False)
        return outcome if isinstance(outcome, int) and not isinstance(outcome, bool) else 0
    except Interrupted as stop:
        return _interrupted(stop.signum)
    except LoaderError as error:
        _report(error.message, exit_code=int(error.exit_code), tried=error.tried, hint=error.hint)
        return int(error.exit_code)
    except click.exceptions.Abort as abort:
        if isinstance(abort.__context__, KeyboardInterrupt):
            return _interrupted(signal.SIGINT)
        _report("aborted", exit_code=int(ExitCode.RUNTIME))
        return int(ExitCode.RUNTIME)
    except click.ClickException as error:
        if _json_logs():
            logging_setup.get_logger().error(error.format_message(), exit_code=int(ExitCode.USAGE),
                                             hint="run with --help for the usage")
        else:
            error.show()
        return int(ExitCode.USAGE)
    except KeyboardInterrupt:
        return _interrupted(signal.SIGINT)
    except (OutputClosed, BrokenPipeError):  # whoever read the output went away (`| head`)
        _silence_stdout()
        with contextlib.suppress(OutputClosed, OSError):
            _report("the output was closed before everything was written (broken pipe)",
                    exit_code=int(ExitCode.RUNTIME))
        return int(ExitCode.RUNTIME)
    except Exception as error:  # an internal bug: still one line and exit 1
        _report(f"{type(error).__name__}: {error}", exit_code=int(ExitCode.RUNTIME), prefix="internal error",
                hint="rerun with --log-level debug for the traceback, and report it")
        return int(ExitCode.RUNTIME)
