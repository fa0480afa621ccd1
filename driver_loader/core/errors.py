"""Exit codes and the one error type the CLI turns into text and a status."""

from __future__ import annotations

import enum
from typing import Optional, Sequence

NOT_FOUND_STATUSES = frozenset({404, 410})


class ExitCode(enum.IntEnum):
    OK = 0
    RUNTIME = 1
    USAGE = 2
    NO_DRIVER = 3
    VERIFICATION = 4
    LOAD = 5
    UNSUPPORTED_HOST = 6


class LoaderError(Exception):
    """A failure with a purpose: an exit code, a one-line reason, what was tried and what to do next."""

    exit_code: ExitCode = ExitCode.RUNTIME

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        tried: Sequence[str] = (),
        exit_code: ExitCode | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.tried = tuple(tried)
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(LoaderError):
    exit_code = ExitCode.USAGE


class NoDriverError(LoaderError):
    exit_code = ExitCode.NO_DRIVER


class VerificationError(LoaderError):
    exit_code = ExitCode.VERIFICATION


class LoadError(LoaderError):
    exit_code = ExitCode.LOAD


class UnsupportedHostError(LoaderError):
    exit_code = ExitCode.UNSUPPORTED_HOST


class HttpFailure(LoaderError):
    """A request that did not return the wanted document. `status` is None when no HTTP answer came back."""

    def __init__(self, message: str, *, url: str, status: Optional[int] = None, hint: str = "",
                 unreachable: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.url = url
        self.status = status
        # No connection could be made at all (DNS, refused, unreachable, connect timeout): the network's fault,
        # not the repository's answer.
        self.unreachable = unreachable

    @property
    def not_found(self) -> bool:
        return self.status in NOT_FOUND_STATUSES


class NetworkError(LoaderError):
    """No repository could be reached: every request failed before an HTTP answer came back."""

    def __init__(self, message: str, *, repos: Sequence[str], tried: Sequence[str] = (), hint: str = "",
                 exit_code: Optional[ExitCode] = None) -> None:
        super().__init__(message, tried=tried, hint=hint, exit_code=exit_code)
        self.repos = tuple(repos)


class InsecureRedirectError(HttpFailure):
    """A redirect from https to plain http, or to anything but http(s)."""
