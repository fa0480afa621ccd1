"""The one way the loader runs another program (dkms, make, depmod, modinfo, insmod, falco --version): no shell,
stdin closed, output captured, a timeout that kills the program's whole process group.

Code that runs programs takes a runner argument, so tests pass a fake with the same `which` and `run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Mapping, Optional, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class CommandResult:
    argv: Tuple[str, ...]
    returncode: Optional[int]  # None when the command timed out or could not start
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self, timeout: float) -> str:
        if self.timed_out:
            return f"timed out after {timeout:g} s"
        if self.returncode is None:
            return f"could not start: {self.stderr.strip()}"
        return f"exit status {self.returncode}"


class CommandRunner:
    """Runs external commands and captures their output; unit tests swap in a fake with the same two methods."""

    def which(self, program: str) -> Optional[str]:
        return shutil.which(program)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        pass_fds: Sequence[int] = (),
    ) -> CommandResult:
        """Run `argv` (no shell) with `env` added to this process's environment and `pass_fds` left open in the
        child. On timeout the whole process group is killed: make and DKMS leave compiler children behind
        otherwise."""
        full_env = {**os.environ, **(env or {})}
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=cwd, env=full_env, start_new_session=True, pass_fds=tuple(pass_fds),
            )
        except OSError as exc:
            return CommandResult(tuple(argv), None, "", f"{argv[0]}: {exc.strerror or exc}")
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, stderr = proc.communicate()
            return CommandResult(tuple(argv), None, _text(stdout), _text(stderr), timed_out=True)
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        return CommandResult(tuple(argv), proc.returncode, _text(stdout), _text(stderr))


    def filter_bytes(self, argv: Sequence[str], data: bytes, *, limit: int,
                     timeout: float) -> Tuple[bytes, CommandResult]:
        """Feed `data` to `argv` on stdin and keep at most `limit` + 1 bytes of its stdout (so the caller can tell
        "at the limit" from "over it"): the program is killed as soon as it writes more, or when `timeout` runs
        out. Input and errors go through temporary files, so reading the bounded output cannot deadlock."""
        with tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as errors:
            source.write(data)
            source.seek(0)
            try:
                proc = subprocess.Popen(list(argv), stdin=source, stdout=subprocess.PIPE, stderr=errors,
                                        start_new_session=True)
            except OSError as exc:
                return b"", CommandResult(tuple(argv), None, "", f"{argv[0]}: {exc.strerror or exc}")
            assert proc.stdout is not None
            out = bytearray()
            timed_out = False
            try:
                deadline = time.monotonic() + timeout
                with selectors.DefaultSelector() as selector:
                    selector.register(proc.stdout, selectors.EVENT_READ)
                    while len(out) <= limit:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not selector.select(remaining):
                            timed_out = True
                            break
                        chunk = os.read(proc.stdout.fileno(), min(1 << 20, limit + 1 - len(out)))
                        if not chunk:
                            break
                        out += chunk
                if timed_out or len(out) > limit:
                    _kill_group(proc)
            except BaseException:
                _kill_group(proc)
                raise
            finally:
                proc.stdout.close()
                returncode = proc.wait()
            errors.seek(0)
            stderr = _text(errors.read(4096))
        return bytes(out), CommandResult(tuple(argv), None if timed_out else returncode, "", stderr, timed_out)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
