"""The fault scenarios of loadtests/faults.py, in their quick form: every invariant holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.faults import SCENARIOS, run


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault_scenario_holds_its_invariants(name: str, tmp_path: Path) -> None:
    for scenario in run([name], quick=True, workdir=tmp_path):
        assert not scenario.violations, (scenario.name, scenario.violations, scenario.figures)
