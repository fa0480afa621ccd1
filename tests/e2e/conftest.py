"""One VM for the whole e2e session: every scenario runs in it, each test reads its own result."""

from __future__ import annotations

import warnings

import e2e_harness as harness
import pytest
from e2e_guest import SCENARIOS


def _skip_loudly(request: pytest.FixtureRequest, reason: str) -> None:
    message = f"REAL-KERNEL E2E SUITE SKIPPED: {reason}"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(message, yellow=True, bold=True)
    warnings.warn(message, stacklevel=1)
    pytest.skip(message)


@pytest.fixture(scope="session")
def guest_run(request: pytest.FixtureRequest) -> harness.GuestRun:
    try:
        work, kernel, drivers = harness.prepare()
    except harness.E2EUnavailable as exc:
        _skip_loudly(request, str(exc))
    return harness.boot_guest(work, kernel, drivers, list(SCENARIOS))


@pytest.fixture(scope="session")
def trixie_run(request: pytest.FixtureRequest) -> harness.GuestRun:
    """The Debian 13 stack (e2e_trixie.py): its own root, kernel and VM, booted after the 6.1 one."""
    import e2e_trixie
    from e2e_guest_trixie import SCENARIOS as TRIXIE_SCENARIOS

    try:
        stack = e2e_trixie.prepare()
    except harness.E2EUnavailable as exc:
        _skip_loudly(request, str(exc))
    return e2e_trixie.boot(stack, list(TRIXIE_SCENARIOS))
