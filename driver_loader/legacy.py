"""The legacy and image-entrypoint command lines, mapped onto our subcommands in one place."""

from __future__ import annotations

from typing import List


def translate_argv(argv: List[str]) -> List[str]:
    return argv
