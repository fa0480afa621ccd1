"""The loader on Debian's real 6.1 kernel under QEMU; the checks themselves run in the guest (e2e_guest.py)."""

from __future__ import annotations

import pytest
from e2e_guest import SCENARIOS

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario(guest_run, scenario):
    result = guest_run.results.get(scenario)
    if result is None:
        how = "ran every scenario" if guest_run.finished else "did not finish (crashed, or the VM timed out)"
        pytest.fail(
            f"the guest printed no result for {scenario}; the guest script {how} (VM exit status "
            f"{guest_run.exit_status}, {guest_run.accel}). Last lines of {guest_run.log_path}:\n{guest_run.log_tail()}"
        )
    assert result.ok, result.report()
