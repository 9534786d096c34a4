"""Hypothesis settings for the fuzzing suite, and the campaign report.

Two profiles (``PYXEN_FUZZ_PROFILE``):

* ``ci`` (the default): a bounded number of examples per target and a fixed
  seed (``derandomize``), so the suite is a deterministic regression test
  that takes seconds;
* ``campaign``: ``PYXEN_FUZZ_EXAMPLES`` examples per target (default 2000)
  with fresh random seeds; ``bench/fuzz.py`` runs it.

When ``PYXEN_FUZZ_REPORT`` names a file, the session writes there, as JSON,
how many calls each target made into pyxen (``fuzz.stats``) and every
failed target with hypothesis's shrunk example.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from fuzz import stats

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "ci", max_examples=int(os.environ.get("PYXEN_FUZZ_EXAMPLES", "100")), deadline=None,
    derandomize=True, database=None, print_blob=True, suppress_health_check=_SLOW_OK)
settings.register_profile(
    "campaign", max_examples=int(os.environ.get("PYXEN_FUZZ_EXAMPLES", "2000")),
    deadline=None, print_blob=True, database=None, suppress_health_check=_SLOW_OK)
settings.load_profile(os.environ.get("PYXEN_FUZZ_PROFILE", "ci"))

_failures: list[dict[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and report.when == "call":
        _failures.append({"test": report.nodeid, "report": report.longreprtext[-6000:]})


def pytest_sessionfinish(session: pytest.Session, exitstatus: Any) -> None:
    path = os.environ.get("PYXEN_FUZZ_REPORT")
    if path:
        Path(path).write_text(json.dumps({"calls": stats.CALLS, "failures": _failures},
                                         indent=2))
