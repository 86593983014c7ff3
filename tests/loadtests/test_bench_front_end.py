"""The front-end benchmark on a second's load: every server answers and is reported.

No timing is asserted (loadtests/bench_front_end.py is run by hand); a server that answers
an error, the shell included, fails the run.
"""

from __future__ import annotations

import re

import pytest

from loadtests import bench_front_end


def test_front_end_bench_reports_every_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--rounds", "1", "--duration-s", "0.3", "--in-process-calls", "300"]
    assert bench_front_end.main(argv) == 0

    out = capsys.readouterr().out
    rows = {
        cells[1].strip(): cells
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| server")
        for cells in [line.split("|")]
    }
    assert set(rows) == {"echo", "shell", "model", "standalone"}
    assert rows["echo"][3].strip().startswith("1.00x")
    for cells in rows.values():
        assert float(cells[2].replace(",", "")) > 0  # closed-loop req/s
        assert float(cells[5]) > 0  # sequential p50 ms
    in_process = re.search(r"(\d+) us CPU per ModelInfer through the servicer", out)
    assert in_process is not None and int(in_process.group(1)) > 0
