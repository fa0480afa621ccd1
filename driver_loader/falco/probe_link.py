"""Handing a legacy eBPF probe to Falco: the verified probe stays in the cache and `<cache dir>/<name>-bpf.o`, the
path Falco looks at by default (`${HOME}/.falco/falco-bpf.o`), points to it.

The link is made under a temporary name and renamed over the old one, so Falco never sees a missing or
half-made link, even while the probe is being switched to another version.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from driver_loader.core.errors import LoaderError
from driver_loader.output.log import get_logger
from driver_loader.system.atomic import symlink_atomically

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class ProbeLink:
    path: str
    target: Optional[str]  # None when there is no link (or something else is at its path)
    target_exists: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def probe_link_path(cache_dir: str, driver_name: str) -> str:
    return os.path.join(cache_dir, f"{driver_name}-bpf.o")


def point_probe_link(link: str, target: str) -> bool:
    """Make `link` a symlink to `target` (absolute); returns whether anything changed."""
    target = os.path.abspath(target)
    if _link_target(link) == target:
        return False
    directory = os.path.dirname(link)
    try:
        os.makedirs(directory, exist_ok=True)
        symlink_atomically(target, link)
    except OSError as exc:
        raise LoaderError(
            f"cannot point {link} to the probe: {exc.strerror or exc}",
            tried=[f"symlink a temporary link beside {link} -> {target}", f"rename it to {link}"],
            hint=f"check that {directory} is writable and is not a file",
        ) from None
    log.info("pointed the eBPF probe link at the verified probe", link=link, target=target)
    return True


def read_probe_link(link: str) -> ProbeLink:
    target = _link_target(link)
    return ProbeLink(path=link, target=target, target_exists=target is not None and os.path.isfile(link))


def remove_probe_link(link: str) -> bool:
    """Remove the link (only a symlink: a file someone put there is theirs); returns whether it existed."""
    if _link_target(link) is None:
        return False
    try:
        os.unlink(link)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise LoaderError(f"cannot remove {link}: {exc.strerror or exc}") from None
    log.info("removed the eBPF probe link", link=link)
    return True


def _link_target(link: str) -> Optional[str]:
    try:
        return os.readlink(link)
    except OSError:
        return None
