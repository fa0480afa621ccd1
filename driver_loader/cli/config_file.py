"""falcoctl.yaml: only its `driver:` section is read. A missing file is fine; we never write it."""

from __future__ import annotations

import os
from typing import Any, Dict

from driver_loader.core.errors import UsageError

_LIMIT = 1024 * 1024


def load_driver_section(path: str, *, required: bool = False) -> Dict[str, Any]:
    from driver_loader.system.files import UnreadableFile, read_regular_file

    if os.path.realpath(path) == os.devnull:
        return {}  # `--config /dev/null`: no config file
    try:
        raw = read_regular_file(path, _LIMIT)
    except UnreadableFile as exc:
        if exc.missing and not required:
            return {}
        if exc.missing:
            raise UsageError(f"config file {path} does not exist", hint="fix --config or create the file") from None
        raise UsageError(f"config file {exc}", hint="point --config at a falcoctl.yaml") from None
    import yaml

    from driver_loader.system.documents import load_yaml

    try:
        doc = load_yaml(raw.decode("utf-8", errors="replace")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise UsageError(
            f"config file {path} is not valid YAML{where}" + (f": {problem}" if problem else ""),
            hint="fix the file or point --config elsewhere",
        ) from None
    if not isinstance(doc, dict):
        raise UsageError(f"config file {path} is not a YAML mapping", hint="fix the file or point --config elsewhere")
    section = doc.get("driver") or {}
    if not isinstance(section, dict):
        raise UsageError(f"config file {path}: `driver` is not a mapping", hint="see falcoctl's falcoctl.yaml layout")
    return section
