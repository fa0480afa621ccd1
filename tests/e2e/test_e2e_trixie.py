"""The loader on Debian 13's 6.12 kernel with today's driver (scap 0.20: API 8.0.3, schema 3.5.0), and Falco's
libscap reading events from what it loaded or handed over. The checks run in the guest (e2e_guest_trixie.py)."""

from __future__ import annotations

import pytest
from e2e_guest_trixie import SCENARIOS

pytestmark = [pytest.mark.e2e, pytest.mark.trixie]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_trixie_scenario(trixie_run, scenario):
    result = trixie_run.results.get(scenario)
    if result is None:
        how = "ran every scenario" if trixie_run.finished else "did not finish (crashed, or the VM timed out)"
        pytest.fail(
            f"the trixie guest printed no result for {scenario}; the guest script {how} (VM exit status "
            f"{trixie_run.exit_status}, {trixie_run.accel}). Last lines of {trixie_run.log_path}:\n"
            f"{trixie_run.log_tail()}"
        )
    assert result.ok, result.report()
