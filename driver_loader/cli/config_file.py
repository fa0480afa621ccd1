"""falcoctl.yaml: only its `driver:` section is read. A missing file is fine; we never write it."""

from __future__ import annotations

from typing import Any, Dict

from driver_loader.core.errors import UsageError

_LIMIT = 1024 * 1024


def load_driver_section(path: str, *, required: bool = False) -> Dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_LIMIT + 1)
    except FileNotFoundError:
        if required:
            raise UsageError(f"config file {path} does not exist", hint="fix --config or create the file") from None
        return {}
    except (IsADirectoryError, PermissionError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}", hint="fix --config") from None
    if len(raw) > _LIMIT:
        raise UsageError(f"config file {path} is larger than 1 MiB", hint="point --config at a falcoctl.yaml")
    import yaml

    try:
        doc = yaml.safe_load(raw.decode("utf-8", errors="replace")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(
            f"config file {path} is not valid YAML{where}", hint="fix the file or point --config elsewhere"
        ) from None
    if not isinstance(doc, dict):
        raise UsageError(f"config file {path} is not a YAML mapping", hint="fix the file or point --config elsewhere")
    section = doc.get("driver") or {}
    if not isinstance(section, dict):
        raise UsageError(f"config file {path}: `driver` is not a mapping", hint="see falcoctl's falcoctl.yaml layout")
    return section
