"""What the kernel being judged will demand of a driver, as the pre-load checks need it: pure data.
host/kernel_facts.py reads it from /proc, /sys and /lib/modules; core/checks.py judges an artifact against it.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

# Lockdown modes that imply LOCKDOWN_MODULE_SIGNATURE: an unsigned module is refused.
SIGNATURE_ENFORCING_LOCKDOWN = ("integrity", "confidentiality")


@dataclasses.dataclass(frozen=True)
class RunningKernel:
    release: str
    arch: str
    modules_supported: bool
    vermagic: Optional[str] = None
    # Where `vermagic` came from: "modinfo of <module>", "built from <config>" or why it is unknown.
    vermagic_source: str = "unavailable"
    sig_enforce: bool = False
    lockdown: Optional[str] = None
    # Exported symbol -> CRC; None when no Module.symvers/symvers.gz was found. Loaded on first use.
    symvers: Optional[Mapping[str, int]] = dataclasses.field(default=None, compare=False, repr=False)
    symvers_source: Optional[str] = None
    # False when judging another release than the running one (e.g. `--kernel-release` on a build host): its module
    # support and signature policy cannot be read, so the checks that need them say so instead of failing.
    running: bool = True

    @property
    def enforces_signatures(self) -> bool:
        """True when an unsigned module is refused: sig_enforce, or lockdown (LOCKDOWN_MODULE_SIGNATURE)."""
        return self.sig_enforce or self.lockdown in SIGNATURE_ENFORCING_LOCKDOWN
