"""The command lines people already have, mapped onto our subcommands in one place.

Three forms reach `main()`:

* subcommands (`install --type kmod`), passed through; options written before the subcommand are moved after it;
* falcoctl's (`driver install --download=false --kernelrelease=X`): the leading `driver` word is dropped, Go-style
  `--flag=true|false` and durations are rewritten, falcoctl-only flags we do not need are dropped with a warning;
* the legacy bash loader's and the falco-driver-loader image's (`[module|bpf|kmod|ebpf|modern_ebpf|auto]
  [--compile] [--download] [--clean] [--print-env] [--http-insecure] [--kernel-release X] ...`), translated to
  `install`, `cleanup` or `printenv`. Any option of `install` is accepted there too, so the Helm chart's
  `driver.loader.initContainer.args` can carry new options.

`translate` is pure; `translate_argv` is the edge that prints usage, warns, and links the host's kernel sources
when running as the container image's entrypoint.
"""

from __future__ import annotations

import enum
import os
import posixpath
import re
import sys
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import click

from driver_loader.cli.commands import SUBCOMMANDS, _options
from driver_loader.core.errors import ExitCode, UsageError
from driver_loader.output import log as logging_setup
from driver_loader.output.log import get_logger

log = get_logger(__name__)

# The image's ENTRYPOINT passes this first: link the host's /usr/src/* into /usr/src, as Falco's image did, so
# DKMS and the kernel's `build` symlinks find the host's headers and driver sources.
ENTRYPOINT_MARKER = "--entrypoint"

# Positional driver words: the legacy loader's (module, bpf), the 0.37+ image's (kmod, ebpf, modern_ebpf, auto) and
# the Helm chart's spelling of modern eBPF.
DRIVER_WORDS: Dict[str, str] = {
    "module": "kmod",
    "kmod": "kmod",
    "bpf": "ebpf",
    "ebpf": "ebpf",
    "modern_ebpf": "modern_ebpf",
    "modern-bpf": "modern_ebpf",
    "auto": "auto",
}

# Legacy switches: they only mean something in the legacy form.
LEGACY_SWITCHES: Dict[str, str] = {
    "--compile": "compile",
    "--download": "download",
    "--clean": "clean",
    "--print-env": "print_env",
    "--source-only": "source_only",
    "--help": "help",
    "-h": "help",
}

# falcoctl spellings with another name here.
RENAMED: Dict[str, Tuple[str, ...]] = {
    "-v": ("--log-level", "debug"),
    "--verbose": ("--log-level", "debug"),
    "--disable-styling": ("--log-format", "text"),
}

# falcoctl options accepted and dropped, with the reason logged.
IGNORED: Dict[str, str] = {
    "--download-headers": "this loader never downloads kernel headers; install the distribution's headers package",
    "--namespace": "Falco's ConfigMap is never edited; config.d/engine-kind-falcoctl.yaml is written instead",
    "--kubeconfig": "Falco's ConfigMap is never edited; config.d/engine-kind-falcoctl.yaml is written instead",
    "--configmap": "Falco's ConfigMap is never edited; config.d/engine-kind-falcoctl.yaml is written instead",
}
_IGNORED_WITH_VALUE = frozenset({"--namespace", "--kubeconfig", "--configmap"})

FALCOCTL_ONLY_COMMANDS: Dict[str, str] = {
    "config": "falcoctl's `driver config` has no equivalent: give --type (and --falco-config-dir) to `install`, "
    "which writes config.d/engine-kind-falcoctl.yaml for Falco itself",
}

# Environment variables of the legacy loader that have no equivalent, and what replaces them.
REPLACED_ENV: Dict[str, str] = {
    "DRIVER_CURL_OPTIONS": "DRIVER_CURL_OPTIONS is ignored (there is no curl); use --http-timeout, --http-retries, "
    "--http-header, --ca-bundle, --http-insecure, or HTTPS_PROXY/NO_PROXY for a proxy",
}

# Compiled on first use (re caches them): only a Go duration value needs them, not every start.
_GO_DURATION = r"^(?:(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s))+$"
_GO_DURATION_PART = r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)"
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_TRUE = ("true", "1", "t", "yes", "y", "on")
_FALSE = ("false", "0", "f", "no", "n", "off")

LEGACY_USAGE = """\
Usage:
  falco-driver-loader [DRIVER] [OPTIONS]     the legacy loader's and the falco-driver-loader image's form
  falco-driver-loader COMMAND [OPTIONS]      printenv, install, download, build, cleanup, status, doctor, ...
  falco-driver-loader driver COMMAND ...     falcoctl's form (`falcoctl driver install ...`)

Drivers (default: auto, or ebpf when FALCO_BPF_PROBE is set):
  kmod, module        the kernel module
  ebpf, bpf           the legacy eBPF probe (drivers older than 10.0.0)
  modern_ebpf         the modern eBPF probe, built into Falco: nothing to install
  auto                modern_ebpf when the kernel supports it, else kmod

Options:
  --compile           try to build the driver locally (with --download: both; default: both)
  --download          try to download a prebuilt driver (with --compile: both; default: both)
  --clean             remove the driver (the `cleanup` command)
  --print-env         print what would be installed, in falcoctl's format (the `printenv` command)
  --http-insecure     skip TLS certificate verification
  --kernel-release X  target kernel release X instead of `uname -r` (or DRIVER_KERNEL_RELEASE)
  --kernel-version Y  target kernel version Y instead of `uname -v` (or DRIVER_KERNEL_VERSION)
  --source-only       accepted for compatibility; does nothing
  -h, --help          show this help (and do nothing else)
  Every option of `falco-driver-loader install --help` is accepted as well.

Environment:
  FALCOCTL_DRIVER_{TYPE,VERSION,REPOS,NAME,HOSTROOT,HTTP_HEADERS}, and the legacy DRIVERS_REPO, DRIVER_NAME,
  DRIVER_VERSION, DRIVER_KERNEL_RELEASE, DRIVER_KERNEL_VERSION, DRIVER_INSECURE_DOWNLOAD, HOST_ROOT,
  FALCO_BPF_PROBE. Command-line options beat them; they beat /etc/falcoctl/falcoctl.yaml.
"""


class Action(str, enum.Enum):
    """What a translated command line does: run `argv`, print the usage, or nothing (exit 0)."""

    RUN = "run"
    HELP = "help"
    NOTHING = "nothing"

    def __str__(self) -> str:
        return self.value


class Translation(NamedTuple):
    """What to run: `argv` for the click group, or `action` HELP (print the usage) / NOTHING (exit 0). A NamedTuple,
    like the two types below: they are defined at every start, and a NamedTuple costs a tenth of a frozen dataclass."""

    argv: Tuple[str, ...]
    action: Action = Action.RUN
    link_sources: bool = False
    host_root: Optional[str] = None  # --host-root when given on the command line
    notes: Tuple[str, ...] = ()


class _OptionInfo(NamedTuple):
    takes_value: bool
    install_only: bool  # meaningless to printenv and cleanup
    boolean: Optional[Tuple[str, str]] = None  # (on spelling, off spelling) of a boolean flag


def _option_table() -> Dict[str, _OptionInfo]:
    """Every shared option of `install`, read from the shared option definitions so the two never disagree (and
    without building click options: this runs at every start)."""
    groups = [(option, False) for option in _options.RESOLUTION_OPTIONS + _options.LOG_OPTIONS]
    groups += [(option, True) for option in
               _options.FETCH_OPTIONS + _options.BUILD_OPTIONS + _options.INSTALL_OPTIONS]
    table: Dict[str, _OptionInfo] = {}
    for option, only in groups:
        flags = [decl.split("/", 1) for decl in option.decls if decl.startswith("-")]
        on = [pair[0] for pair in flags]
        off = [pair[1] for pair in flags if len(pair) == 2]
        is_flag = bool(option.attrs.get("is_flag")) or bool(off)
        info = _OptionInfo(takes_value=not is_flag, install_only=only,
                           boolean=(on[0], off[0] if off else "") if is_flag else None)
        for spelling in on + off:
            table[spelling] = info
    return table


OPTIONS: Dict[str, _OptionInfo] = _option_table()
LOG_OPTIONS = frozenset({"--log-format", "--log-level"})
GROUP_PASSTHROUGH = frozenset({"-h", "--help", "-V", "--version"})


def go_duration_seconds(text: str) -> Optional[float]:
    """Seconds in a Go duration such as `60s`, `1m0s` or `1m30s`; None when `text` is not one."""
    if not re.match(_GO_DURATION, text):
        return None
    return sum(float(amount) * _GO_UNITS[unit] for amount, unit in re.findall(_GO_DURATION_PART, text))


def _split(token: str) -> Tuple[str, Optional[str]]:
    if token.startswith("--") and "=" in token:
        name, _, value = token.partition("=")
        return name, value
    return token, None


class _Option(NamedTuple):
    """One option as written, normalised to our spelling: `tokens` is what to pass on."""

    name: str
    tokens: Tuple[str, ...]
    value: Optional[str]
    info: Optional[_OptionInfo]


def _read_option(args: List[str], index: int, notes: List[str]) -> Tuple[Optional[_Option], int]:
    """The option at `args[index]` and the index after it; (None, index + 1) for a dropped falcoctl option.
    Raises UsageError for an option we do not know."""
    name, inline = _split(args[index])
    following = index + 1
    if name in RENAMED and inline is None:
        replacement = RENAMED[name]
        return _Option(replacement[0], replacement, replacement[1], OPTIONS.get(replacement[0])), following
    if name in IGNORED:
        if name in _IGNORED_WITH_VALUE and inline is None:
            following += 1
        if (inline or "").lower() not in _FALSE:
            notes.append(f"ignoring {name}: {IGNORED[name]}")
        return None, following
    info = OPTIONS.get(name)
    if info is None:
        raise UsageError(f"unknown option: {args[index]}", hint="see the usage below")
    if info.takes_value:
        if inline is None:
            if following >= len(args):
                raise UsageError(f"option {name} needs a value", hint="see the usage below")
            inline = args[following]
            following += 1
        value = inline
        if name in ("--http-timeout", "--build-timeout"):
            seconds = go_duration_seconds(value)
            if seconds is not None:
                value = f"{seconds:g}"
        return _Option(name, (name, value), value, info), following
    if inline is None:
        return _Option(name, (name,), None, info), following
    # falcoctl writes booleans as --flag=true / --flag=false.
    on, off = info.boolean or (name, "")
    if inline.lower() in _TRUE:
        return _Option(name, (on,), inline, info), following
    if inline.lower() in _FALSE:
        if off:
            return _Option(name, (off,), inline, info), following
        return None, following  # a flag without an "off" spelling is off when not given
    raise UsageError(f"option {name} expects true or false, got {inline!r}", hint="see the usage below")


def _subcommands() -> Tuple[str, ...]:
    return tuple(SUBCOMMANDS)


def translate(argv: Sequence[str]) -> Translation:
    """Map any accepted command line onto our subcommands. Raises UsageError for what cannot be understood."""
    args = list(argv)
    link_sources = bool(args) and args[0] == ENTRYPOINT_MARKER
    if link_sources:
        args = args[1:]
    if args and args[0] in GROUP_PASSTHROUGH:
        return Translation(tuple(args), link_sources=link_sources)
    subcommands = _subcommands()
    notes: List[str] = []

    leading, index = _leading_options(args, notes)
    word = args[index] if index < len(args) else None
    if word == "driver":
        rest = args[index + 1:]
        more, inner = _leading_options(rest, notes)
        leading += more
        if inner >= len(rest) or rest[inner] in ("-h", "--help"):
            return Translation(("--help",), link_sources=link_sources, notes=tuple(notes))
        command = rest[inner]
        if command in FALCOCTL_ONLY_COMMANDS:
            raise UsageError(FALCOCTL_ONLY_COMMANDS[command], hint="see `falco-driver-loader --help`")
        if command not in subcommands:
            raise UsageError(f"unknown command: driver {command}", hint="see `falco-driver-loader --help`")
        return _subcommand_form(command, leading, rest[inner + 1:], notes, link_sources)
    if word in subcommands:
        return _subcommand_form(word, leading, args[index + 1:], notes, link_sources)
    return _legacy_form(args, link_sources)


def _leading_options(args: List[str], notes: List[str]) -> Tuple[List[_Option], int]:
    """Options before the first word, and that word's index. Stops at a legacy switch: that is the legacy form."""
    found: List[_Option] = []
    index = 0
    while index < len(args) and args[index].startswith("-") and args[index] != "-":
        if _split(args[index])[0] in LEGACY_SWITCHES:
            break
        option, index = _read_option(args, index, notes)
        if option is not None:
            found.append(option)
    return found, index


def _subcommand_form(command: str, leading: List[_Option], rest: List[str], notes: List[str],
                     link_sources: bool) -> Translation:
    """`[options] COMMAND [args]`: log options stay in front of the command (the group takes them), every other
    leading option moves after it; the command's own arguments are passed on with falcoctl spellings rewritten."""
    front = [t for o in leading if o.name in LOG_OPTIONS for t in o.tokens]
    moved = [t for o in leading if o.name not in LOG_OPTIONS for t in o.tokens]
    host_root = next((o.value for o in leading if o.name == "--host-root"), None)
    tail: List[str] = []
    index = 0
    while index < len(rest):
        token = rest[index]
        name, _ = _split(token)
        if token == "--":
            tail.extend(rest[index:])
            break
        if name in OPTIONS or name in RENAMED or name in IGNORED:
            option, index = _read_option(rest, index, notes)
            if option is not None:
                tail.extend(option.tokens)
                if option.name == "--host-root":
                    host_root = option.value
            continue
        tail.append(token)  # the command's own options and arguments: click checks them
        index += 1
    return Translation(tuple(front + [command] + moved + tail), link_sources=link_sources,
                       host_root=host_root, notes=tuple(notes))


def _legacy_form(args: List[str], link_sources: bool) -> Translation:
    notes: List[str] = []
    switches: List[str] = []
    driver: Optional[str] = None
    options: List[_Option] = []
    index = 0
    while index < len(args):
        token = args[index]
        if token in LEGACY_SWITCHES:
            switches.append(LEGACY_SWITCHES[token])
            index += 1
        elif token.startswith("-") and token != "-":
            option, index = _read_option(args, index, notes)
            if option is not None:
                options.append(option)
        elif token in DRIVER_WORDS:
            if driver is not None:
                raise UsageError("only one driver per invocation", hint="see the usage below")
            driver = DRIVER_WORDS[token]
            index += 1
        else:
            raise UsageError(f"unknown driver or command: {token}", hint="see the usage below")

    if "help" in switches:
        return Translation((), action=Action.HELP, notes=tuple(notes))
    if "source_only" in switches:
        return Translation((), action=Action.NOTHING, notes=tuple(notes))
    if driver is not None and any(o.name == "--type" for o in options):
        raise UsageError("give the driver either as a word (kmod, ebpf, ...) or with --type, not both",
                         hint="see the usage below")

    bare_compile, bare_download = "compile" in switches, "download" in switches
    if "print_env" in switches:
        command = "printenv"
    elif "clean" in switches:
        if bare_compile or bare_download:
            raise UsageError("--clean cannot be combined with --compile or --download", hint="see the usage below")
        command = "cleanup"
    else:
        command = "install"

    argv = [t for o in options if o.name in LOG_OPTIONS for t in o.tokens] + [command]
    if driver is not None:
        argv += ["--type", driver]
    if command == "install" and (bare_compile or bare_download):
        # Given ones enable only themselves; explicit --no-X/--X=false written later still wins.
        argv += ["--compile" if bare_compile else "--no-compile", "--download" if bare_download else "--no-download"]
    for option in options:
        if option.name in LOG_OPTIONS or (command != "install" and option.info and option.info.install_only):
            continue
        argv += option.tokens
    host_root = next((o.value for o in options if o.name == "--host-root"), None)
    return Translation(tuple(argv), link_sources=link_sources, host_root=host_root, notes=tuple(notes))


def link_host_sources(host_root: str, usr_src: str = "/usr/src") -> List[str]:
    """Symlink every `<host_root>/usr/src/*` into `usr_src` where that name is free, as Falco's image entrypoint
    did; the kernel's `build` links and DKMS look in /usr/src. Failures are logged and skipped. Returns the links
    made."""
    source_dir = posixpath.join(host_root, "usr/src")
    try:
        names = sorted(os.listdir(source_dir))
    except OSError as exc:
        log.debug("no host kernel sources to link", path=source_dir, error=exc.strerror or str(exc))
        return []
    made = []
    for name in names:
        link = posixpath.join(usr_src, name)
        if os.path.lexists(link):
            continue
        try:
            os.makedirs(usr_src, exist_ok=True)
            os.symlink(posixpath.join(source_dir, name), link)
        except OSError as exc:
            log.warning("cannot link host sources", link=link, error=exc.strerror or str(exc))
            continue
        made.append(link)
    if made:
        log.debug("linked host sources", count=len(made), into=usr_src)
    return made


def translate_argv(argv: List[str], env: Optional[Mapping[str, str]] = None) -> List[str]:
    """`translate`, for main(): prints the usage on errors (exit 2) and for --help (exit 0), exits 0 for
    --source-only, warns about replaced environment variables, and links host sources in entrypoint mode."""
    env = os.environ if env is None else env
    try:
        translation = translate(argv)
    except UsageError as error:
        if logging_setup.effective_format() == "json":  # stderr stays one JSON object per line
            log.error(error.message, exit_code=int(ExitCode.USAGE), hint="run falco-driver-loader --help")
        else:
            click.echo(f"error: {error.message}\n\n{LEGACY_USAGE}", err=True, nl=False)
        sys.exit(int(ExitCode.USAGE))
    for name, advice in REPLACED_ENV.items():
        if env.get(name):
            log.warning(advice)
    for note in translation.notes:
        log.warning(note)
    if translation.action is Action.HELP:
        click.echo(LEGACY_USAGE, nl=False)
        sys.exit(int(ExitCode.OK))
    if translation.action is Action.NOTHING:
        log.info("--source-only: nothing to do (the legacy loader's functions cannot be sourced from this one)")
        sys.exit(int(ExitCode.OK))
    if translation.link_sources:
        host_root = translation.host_root or env.get("FALCOCTL_DRIVER_HOSTROOT") or env.get("HOST_ROOT") or "/"
        if host_root != "/":
            link_host_sources(host_root)
    return list(translation.argv)
