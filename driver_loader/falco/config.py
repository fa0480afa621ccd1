"""Handing the driver over to Falco: `<falco config dir>/config.d/engine-kind-falcoctl.yaml`, the file falcoctl
writes and Falco merges through its `config_files` setting. The only module that writes Falco's configuration.

The file is replaced atomically (temp file, fsync, rename), so Falco reads the old choice or the new one, never
half of either; a failed write leaves the old file as it was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Optional, Tuple

from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import LoaderError
from driver_loader.output.log import get_logger
from driver_loader.system.atomic import write_atomically

log = get_logger(__name__)

CONFIG_D = "config.d"
ENGINE_CONFIG_NAME = "engine-kind-falcoctl.yaml"
DIR_MODE = 0o755
FILE_MODE = 0o644
_READ_LIMIT = 64 * 1024
# A path YAML reads back unchanged without quotes.
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    path: str
    exists: bool
    content: Optional[str] = None
    kind: Optional[str] = None
    probe: Optional[str] = None
    error: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def engine_config_path(config_dir: str) -> str:
    return os.path.join(config_dir, CONFIG_D, ENGINE_CONFIG_NAME)


def engine_config_text(driver_type: DriverType, probe: Optional[str] = None) -> str:
    """falcoctl's content (yaml.v3, 4-space indent); the legacy eBPF probe also names the probe file."""
    text = f"engine:\n    kind: {driver_type}\n"
    if driver_type is DriverType.EBPF and probe:
        text += f"    ebpf:\n        probe: {_yaml_string(probe)}\n"
    return text


def _yaml_string(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar.
    return value if _PLAIN_PATH.match(value) else json.dumps(value)


def write_engine_config(config_dir: str, driver_type: DriverType, probe: Optional[str] = None) -> Tuple[str, bool]:
    """Make the config.d file say `driver_type`; returns its path and whether it changed."""
    path = engine_config_path(config_dir)
    text = engine_config_text(driver_type, probe)
    current = _read(path)
    if current == text:
        log.debug("Falco is already configured for this driver", path=path)
        return path, False
    directory = os.path.dirname(path)
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
            os.chmod(directory, DIR_MODE)
        write_atomically(path, text.encode(), mode=FILE_MODE)
    except OSError as exc:
        raise LoaderError(
            f"cannot write Falco's driver config {path}: {exc.strerror or exc}",
            tried=[f"write {path} (temp file, fsync, rename)"],
            hint=f"check that {directory} is writable (or pass --falco-config-dir, or --no-update-falco); "
            + ("the previous file was left unchanged" if current is not None else "no file was written"),
        ) from None
    log.debug("configured Falco for the driver", path=path, kind=str(driver_type))
    return path, True


def read_engine_config(config_dir: str) -> EngineConfig:
    path = engine_config_path(config_dir)
    text = _read(path)
    if text is None:
        return EngineConfig(path=path, exists=False)
    import yaml

    from driver_loader.system.documents import load_yaml

    try:
        doc = load_yaml(text)
    except yaml.YAMLError as exc:
        return EngineConfig(path=path, exists=True, content=text, error=f"not valid YAML: {exc}")
    engine = doc.get("engine") if isinstance(doc, dict) else None
    if not isinstance(engine, dict):
        return EngineConfig(path=path, exists=True, content=text, error="no engine section")
    ebpf = engine.get("ebpf")
    probe = ebpf.get("probe") if isinstance(ebpf, dict) else None
    kind = engine.get("kind")
    return EngineConfig(path=path, exists=True, content=text, kind=str(kind) if kind is not None else None,
                        probe=str(probe) if probe is not None else None)


def remove_engine_config(config_dir: str) -> Optional[str]:
    """Remove the config.d file; returns its path, or None when there was none."""
    path = engine_config_path(config_dir)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LoaderError(f"cannot remove {path}: {exc.strerror or exc}") from None
    log.info("removed Falco's driver config", path=path)
    return path


def _read(path: str) -> Optional[str]:
    from driver_loader.system.files import UnreadableFile, read_regular_file

    try:
        return read_regular_file(path, _READ_LIMIT).decode("utf-8", "replace")
    except UnreadableFile as exc:
        if exc.missing:
            return None
        log.warning("Falco's driver config cannot be read", path=path, reason=exc.reason)
        return ""  # present but unreadable (a FIFO, too large...): never equal to what we would write
