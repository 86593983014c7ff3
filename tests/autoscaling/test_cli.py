"""`switchyard autoscale simulate` as an SRE runs it: outputs written, clear errors, exit codes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from switchyard.server.autoscaling.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "server" / "autoscaling" / "examples"
SERVICE_TIME = "lognormal:p50_s=0.05,p95_s=0.12"


def simulate_args(trace: Path, policies: Path, out: Path, *extra: str) -> list[str]:
    return [
        "simulate", "--trace", str(trace), "--policies", str(policies),
        "--service-time", SERVICE_TIME, "--out", str(out), *extra,
    ]  # fmt: skip


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def short_trace(tmp_path: Path) -> Path:
    return write(tmp_path / "trace.csv", "time_s,requests_per_s\n0,5\n30,20\n90,20\n")


@pytest.fixture
def two_policies(tmp_path: Path) -> Path:
    return write(
        tmp_path / "policies.yaml",
        "policies:\n"
        "  - {name: quick, target_latency_s: 0.2, max_ongoing_requests: 1,"
        " upscale_stabilization_s: 5}\n"
        "  - {name: p99, target_latency_s: 0.3, percentile: 99, max_ongoing_requests: 1}\n",
    )


def test_simulate_writes_the_timeline_and_the_plot(
    tmp_path: Path, short_trace: Path, two_policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    code = main(simulate_args(short_trace, two_policies, out, "--cold-start-s", "10"))
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "quick: replicas peak" in printed.out and "p99: replicas peak" in printed.out
    with (out / "timeline.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["policy", "time_s", "requests_per_s", "replicas", "ready_replicas",
                             "p95_s", "p99_s", "target_s", "reason"]  # fmt: skip
    assert [row["policy"] for row in rows] == ["quick"] * 90 + ["p99"] * 90
    assert {row["target_s"] for row in rows[90:]} == {"0.3"}
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_shipped_examples_parse(tmp_path: Path) -> None:
    from switchyard.server.autoscaling.sim_inputs import load_policy_configs, load_trace

    assert load_trace(EXAMPLES / "step_trace.csv").end_s == 900
    assert [name for name, _ in load_policy_configs(EXAMPLES / "policies.yaml")] == [
        "balanced", "eager", "cautious-p99",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--trace": "absent.csv"}, "absent.csv: cannot read trace"),
        ({"--policies": "absent.yaml"}, "absent.yaml: cannot read policies"),
        ({"--service-time": "gaussian:1"}, "service time 'gaussian:1': expected"),
        ({"--tick-s": "0"}, "tick_s: must be > 0"),
    ],
)
def test_bad_inputs_exit_2_with_one_clear_line(
    tmp_path: Path,
    short_trace: Path,
    two_policies: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str],
    message: str,
) -> None:
    args = simulate_args(short_trace, two_policies, tmp_path / "out")
    for flag, value in change.items():
        value = str(tmp_path / value) if flag in ("--trace", "--policies") else value
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("switchyard autoscale simulate: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_bad_policy_setting_is_named(
    tmp_path: Path, short_trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = write(tmp_path / "p.yaml", "policies:\n  - {name: x, target_latency_s: -1}\n")
    code = main(simulate_args(short_trace, policies, tmp_path / "out"))
    assert code == 2
    expected = "policies[0] (x): target_latency_s: Input should be greater than 0"
    assert expected in capsys.readouterr().err


def test_an_output_folder_that_cannot_be_made_exits_1(
    tmp_path: Path, short_trace: Path, two_policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = write(tmp_path / "file", "")
    code = main(simulate_args(short_trace, two_policies, blocker / "out"))
    err = capsys.readouterr().err
    assert code == 1 and "cannot write to" in err and "Traceback" not in err
