"""Checks on the HTTP options that need no session and no requests: the fetcher runs them before it touches the
cache, so a bad option fails first and leaves nothing behind, even when a cached artifact means no session is built."""

from __future__ import annotations

import os

from driver_loader.core.errors import UsageError
from driver_loader.core.settings import HttpOptions


def require_ca_bundle(options: HttpOptions) -> None:
    """A CA bundle that was asked for must exist: a missing one is a usage error, never a silent fallback."""
    if options.ca_bundle and not os.path.exists(options.ca_bundle):
        raise UsageError(
            f"CA bundle {options.ca_bundle!r} does not exist",
            hint="pass an existing PEM file with --ca-bundle, or unset REQUESTS_CA_BUNDLE / SSL_CERT_FILE",
        )
