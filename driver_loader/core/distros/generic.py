"""Any other distro: the lower-cased os-release ID is the target, and the generic kernel-version rule applies.
Picked by no ID of its own: it is what the registry falls back to."""

from __future__ import annotations

from driver_loader.core.distros.base import Distro


class Generic(Distro):
    name = "generic"


DISTRO = Generic()
