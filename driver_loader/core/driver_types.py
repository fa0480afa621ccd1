"""The three kinds of Falco driver, and how users spell them."""

from __future__ import annotations

import enum
import re
from typing import Iterable

from driver_loader.core.errors import UsageError


class DriverType(str, enum.Enum):
    KMOD = "kmod"
    EBPF = "ebpf"
    MODERN_EBPF = "modern_ebpf"

    @property
    def extension(self) -> str:
        """File extension of the artifact; modern_ebpf ships inside Falco and has none."""
        return {"kmod": ".ko", "ebpf": ".o", "modern_ebpf": ""}[self.value]

    @property
    def has_artifact(self) -> bool:
        return self is not DriverType.MODERN_EBPF

    def __str__(self) -> str:
        return self.value


DEFAULT_TYPES = (DriverType.MODERN_EBPF, DriverType.KMOD)

# Legacy loader and image entrypoint spellings.
_ALIASES = {"module": DriverType.KMOD, "bpf": DriverType.EBPF}

_SEPARATORS = re.compile(r"[,;\s]+")


def split_list(values: Iterable[str]) -> list[str]:
    """Split falcoctl-style lists: `;`, `,` and whitespace all separate entries; empty ones drop out."""
    out: list[str] = []
    for value in values:
        out.extend(part for part in _SEPARATORS.split(value) if part)
    return out


def parse_driver_types(values: Iterable[str]) -> tuple[DriverType, ...]:
    """Turn a priority list (possibly with `auto`, `module`, `bpf`) into driver types, without duplicates."""
    result: list[DriverType] = []
    for word in split_list(values):
        key = word.strip().lower()
        if key == "auto":
            kinds: tuple[DriverType, ...] = DEFAULT_TYPES
        elif key in _ALIASES:
            kinds = (_ALIASES[key],)
        else:
            try:
                kinds = (DriverType(key),)
            except ValueError:
                raise UsageError(
                    f"unsupported driver type specified: {word!r}",
                    hint="use kmod, ebpf, modern_ebpf or auto (legacy: module, bpf)",
                ) from None
        result.extend(k for k in kinds if k not in result)
    return tuple(result) or DEFAULT_TYPES
