"""Progress for downloads and builds: drawn on stderr only when it is a terminal, never in container logs."""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional, TextIO

from driver_loader.output import log as logging_setup

_BAR_WIDTH = 30
_REDRAW_SECONDS = 0.1
_SPINNER = "|/-\\"


def _interactive() -> bool:
    return logging_setup.stderr_is_tty() and logging_setup.effective_format() != "json"


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


class DownloadBar:
    """A `progress(done, total)` callback for the fetch layer; a no-op when stderr is not a terminal."""

    def __init__(self, label: str, stream: Optional[TextIO] = None, enabled: Optional[bool] = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = _interactive() if enabled is None else enabled
        self._last_draw = 0.0
        self._drawn = False

    def __call__(self, done: int, total: Optional[int]) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - self._last_draw < _REDRAW_SECONDS:
            return
        self._last_draw = now
        if total:
            filled = int(_BAR_WIDTH * min(done, total) / total)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            text = f"\r{self.label} [{bar}] {_human(done)}/{_human(total)}"
        else:
            text = f"\r{self.label} {_human(done)}"
        self.stream.write(text + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


class BuildSpinner:
    """A `progress(message)` callback for the build layer: a spinner with elapsed time on a terminal, a log line
    per step elsewhere. Builds block in a subprocess, so the spinner turns in a thread."""

    def __init__(self, stream: Optional[TextIO] = None, enabled: Optional[bool] = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = _interactive() if enabled is None else enabled
        self._message = ""
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __call__(self, message: str) -> None:
        if not self.enabled:
            logging_setup.get_logger().info(message)
            return
        self._message = message
        self._started = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(target=self._spin, name="build-progress", daemon=True)
            self._thread.start()

    def _spin(self) -> None:
        turn = 0
        while not self._stop.wait(0.2):
            elapsed = int(time.monotonic() - self._started)
            self.stream.write(f"\r{_SPINNER[turn % len(_SPINNER)]} {self._message} ({elapsed}s)\x1b[K")
            self.stream.flush()
            turn += 1

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.stream.write("\r\x1b[K")
            self.stream.flush()
