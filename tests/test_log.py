"""Logging stays out of the way: a line below the level costs no structlog import, a line at the level is written."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _log_in_fresh_interpreter(level: str, method: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import sys
        from driver_loader.output import log
        log.setup(log_format="text", log_level={level!r})
        log.get_logger().{method}("hello from the test", key="value")
        print("structlog" in sys.modules)
    """)
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize(("level", "method"), [("warn", "info"), ("error", "warning"), ("info", "debug")])
def test_a_line_below_the_level_is_dropped_without_importing_structlog(level, method):
    proc = _log_in_fresh_interpreter(level, method)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert "hello from the test" not in proc.stderr


@pytest.mark.parametrize(("level", "method"), [("info", "info"), ("warn", "error"), ("debug", "debug")])
def test_a_line_at_or_above_the_level_goes_to_stderr(level, method):
    proc = _log_in_fresh_interpreter(level, method)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    assert "hello from the test" in proc.stderr and "key=value" in proc.stderr
