"""Logging: structlog, configured once, imported only when something is actually logged.

printenv and the already-loaded fast path must stay light, so `get_logger()` hands out a proxy that imports
and configures structlog on the first call. Logs always go to stderr.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence, TextIO, cast

_LEVELS = {"trace": 5, "debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40}

_config = {"format": "auto", "level": "info"}
_configured = False


def setup(log_format: Optional[str] = None, log_level: Optional[str] = None) -> None:
    """Record the wanted format and/or level; structlog itself is configured lazily, on the first log line."""
    global _configured
    if log_format is not None:
        _config["format"] = "auto" if log_format.lower() == "color" else log_format.lower()
    if log_level is not None:
        _config["level"] = log_level.lower()
    _configured = False


def is_debug() -> bool:
    return _enabled("debug")


def _enabled(method: str) -> bool:
    return _LEVELS[method] >= _LEVELS.get(_config["level"], 20)


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def effective_format() -> str:
    fmt = _config["format"]
    if fmt == "json":
        return "json"
    if fmt == "text":
        return "text"
    if stderr_is_tty() and not os.environ.get("NO_COLOR"):
        return "color"
    return "text"


def _configure() -> None:
    global _configured
    import logging

    import structlog

    fmt = effective_format()
    processors: list = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    if fmt == "json":
        processors += [
            structlog.processors.EventRenamer("msg"),
            structlog.processors.format_exc_info,
            _redact_event,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        processors += [_redact_event,
                       structlog.dev.ConsoleRenderer(colors=fmt == "color",
                                                     exception_formatter=structlog.dev.plain_traceback)]
    threshold = _LEVELS.get(_config["level"], logging.INFO)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        # PrintLogger only calls write() and flush(), which is all _CurrentStderr has.
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=False,
    )
    _configured = True


def _redact_event(_logger: Any, _method: str, event_dict: dict) -> dict:
    """Every string of the event, redacted before it is rendered (the stderr writer redacts the rendered line
    again: the same function, so a value is safe however the renderer quotes it). A traceback still to be
    formatted (`exc_info`) is left to the renderer, whose output the stderr writer redacts."""
    from driver_loader.output.boundary import redact

    return {key: value if key in ("exc_info", "stack_info") else _redact_value(value, redact)
            for key, value in event_dict.items()}


def _redact_value(value: Any, redact: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return [_redact_value(item, redact) for item in value]
    if isinstance(value, dict):
        return {key: _redact_value(item, redact) for key, item in value.items()}
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(str(value))


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time of the call (tests and click swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _LazyLogger:
    """Stands in for a structlog logger until the first log call."""

    def __init__(self, name: Optional[str]) -> None:
        self._name = name
        self._bound: dict = {}

    def bind(self, **kw: Any) -> _LazyLogger:
        child = _LazyLogger(self._name)
        child._bound = {**self._bound, **kw}
        return child

    def _emit(self, method: str, event: str, **kw: Any) -> None:
        if not _enabled(method):  # before structlog is imported: a filtered-out line costs nothing
            return
        if not _configured:
            _configure()
        import structlog

        logger = structlog.get_logger()
        if self._bound:
            logger = logger.bind(**self._bound)
        getattr(logger, method)(event, **kw)

    def debug(self, event: str, **kw: Any) -> None:
        self._emit("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", event, **kw)

    warn = warning

    def error(self, event: str, **kw: Any) -> None:
        self._emit("error", event, **kw)


def summary(headline: str, details: Sequence[str] = ()) -> None:
    """A command's closing summary on stderr: indented lines for a person, one JSON log line with --log-format json
    (so stderr stays pure JSON lines)."""
    if effective_format() == "json":
        get_logger().info(headline, details=list(details))
        return
    sys.stderr.write("\n".join([headline, *(f"  {line}" for line in details)]) + "\n")
    sys.stderr.flush()


def get_logger(name: Optional[str] = None) -> _LazyLogger:
    return _LazyLogger(name)
