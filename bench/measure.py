"""Running commands and measuring them: wall time, CPU time and peak RSS per process, every run bounded in time."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class Run:
    argv: Sequence[str]
    returncode: int
    wall: float  # seconds from spawn to exit
    cpu: float  # user + system seconds of the process and the children it waited for
    maxrss: int  # bytes, the largest resident set of the process or of one of its waited-for children
    timed_out: bool
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe_failure(self) -> str:
        what = "timed out" if self.timed_out else f"exit {self.returncode}"
        tail = self.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        return f"{' '.join(self.argv[:4])} ...: {what}" + (f": {' | '.join(tail)}" if tail else "")


class Spawned:
    """A started process whose output goes to unlinked temporary files, so no pipe can fill up and block it."""

    def __init__(self, argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None):
        self.argv = list(argv)
        # closed in finish(), once the process has exited
        self._out = tempfile.TemporaryFile()  # noqa: SIM115
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        self.started = time.perf_counter()
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
                                        env=dict(env) if env is not None else None, cwd=cwd,
                                        start_new_session=True)
        self.timed_out = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """Kill the process and anything it started (it leads its own session)."""
        self.timed_out = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def finish(self, status: int, rusage, ended: float) -> Run:
        self.process.returncode = os.waitstatus_to_exitcode(status)
        outputs = []
        for stream in (self._out, self._err):
            stream.seek(0)
            outputs.append(stream.read())
            stream.close()
        return Run(
            argv=self.argv,
            returncode=self.process.returncode,
            wall=ended - self.started,
            cpu=rusage.ru_utime + rusage.ru_stime,
            maxrss=rusage.ru_maxrss * 1024,
            timed_out=self.timed_out,
            stdout=outputs[0],
            stderr=outputs[1],
        )


def run(argv: Sequence[str], *, timeout: float, env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None) -> Run:
    """Run one command to completion (killed after `timeout` seconds) and measure it with wait4's rusage."""
    spawned = Spawned(argv, env=env, cwd=cwd)
    watchdog = threading.Timer(timeout, spawned.kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        _, status, rusage = os.wait4(spawned.pid, 0)
        ended = time.perf_counter()
    except BaseException:  # interrupted: leave nothing running behind
        spawned.kill()
        os.wait4(spawned.pid, 0)
        raise
    finally:
        watchdog.cancel()
    return spawned.finish(status, rusage, ended)


def run_all(argvs: Sequence[Sequence[str]], *, timeout: float, env: Optional[Mapping[str, str]] = None,
            cwd: Optional[str] = None) -> List[Run]:
    """Start every command at once, wait for all of them (each killed after `timeout` seconds), keep their order."""
    spawned: Dict[int, Spawned] = {}
    try:
        for argv in argvs:
            process = Spawned(argv, env=env, cwd=cwd)
            spawned[process.pid] = process
    except OSError:
        for process in spawned.values():
            process.kill()
        raise
    order = list(spawned)
    deadline = time.perf_counter() + timeout

    def kill_stragglers() -> None:
        while time.perf_counter() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.perf_counter())))
            if not pending:
                return
        for pid in list(pending):
            spawned[pid].kill()

    pending = set(order)
    watchdog = threading.Thread(target=kill_stragglers, daemon=True)
    watchdog.start()
    runs: Dict[int, Run] = {}
    try:
        while pending:
            pid, status, rusage = os.wait4(-1, 0)
            ended = time.perf_counter()
            if pid in pending:
                pending.discard(pid)
                runs[pid] = spawned[pid].finish(status, rusage, ended)
    except BaseException:  # interrupted: leave nothing running behind
        for pid in pending:
            spawned[pid].kill()
        for pid in pending:
            os.wait4(pid, 0)
        raise
    watchdog.join()
    return [runs[pid] for pid in order]


def interleaved(commands: Mapping[str, Sequence[str]], *, rounds: int, warmup: int = 1, timeout: float,
                env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None) -> Dict[str, List[Run]]:
    """Run each command `rounds` times, taking turns, so that load from elsewhere on the machine falls on all of them
    alike; `warmup` untimed rounds first fill the page cache and write bytecode caches."""
    results: Dict[str, List[Run]] = {name: [] for name in commands}
    for round_number in range(warmup + rounds):
        for name, argv in commands.items():
            result = run(argv, timeout=timeout, env=env, cwd=cwd)
            if not result.ok:
                raise RuntimeError(result.describe_failure())
            if round_number >= warmup:
                results[name].append(result)
    return results


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def median_wall(runs: Sequence[Run]) -> float:
    return statistics.median(r.wall for r in runs)


def median_cpu(runs: Sequence[Run]) -> float:
    return statistics.median(r.cpu for r in runs)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with at least `fraction` of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return ordered[rank - 1]
