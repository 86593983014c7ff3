"""The shipped Prometheus rules and Grafana dashboard: promtool's checks and unit tests,
and the promises the files make about themselves."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict

import yaml

from loadtests.prometheus_process import prometheus_binary
from switchyard.server.metrics import LATENCY_BUCKETS_S
from tests.observability.dashboard_queries import (
    RULES_PATH,
    RULES_TEST_PATH,
    load_dashboard,
    load_rules,
    panels,
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prometheus_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=RULES_PATH.parent,
    )


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(RULES_PATH))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULES_TEST_PATH))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    outcomes: dict[str, set[bool]] = defaultdict(set)
    for test in yaml.safe_load(RULES_TEST_PATH.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            outcomes[case["alertname"]].add(bool(case["exp_alerts"]))
    alerts = {rule["alert"] for rule in load_rules() if "alert" in rule}
    untested = {alert for alert in alerts if outcomes[alert] != {True, False}}
    assert not untested, f"alerts without a firing and a not-firing case: {sorted(untested)}"
    assert set(outcomes) <= alerts, f"tests of alerts that do not exist: {set(outcomes) - alerts}"


def test_every_alert_has_a_severity_summary_and_description() -> None:
    for rule in load_rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"page", "ticket", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_latency_slo_counts_under_one_real_bucket_boundary() -> None:
    slo_rules = [r for r in load_rules() if "slo_latency_slow" in r.get("record", "")]
    assert len(slo_rules) == 4  # the 5m, 30m, 1h and 6h windows of the burn-rate alerts
    thresholds = {le for rule in slo_rules for le in re.findall(r'le="([^"]+)"', rule["expr"])}
    assert len(thresholds) == 1, f"the SLO's windows count under different buckets: {thresholds}"
    (threshold,) = thresholds
    # A boundary the gateway exports, written as prometheus_client writes it.
    assert threshold in {repr(float(bound)) for bound in LATENCY_BUCKETS_S}
    objective = [
        r for r in load_rules() if r.get("record") == "switchyard:slo_latency_objective:ratio"
    ]
    assert len(objective) == 1 and 0 < float(re.findall(r"[\d.]+", objective[0]["expr"])[0]) < 1


def test_dashboard_takes_its_data_source_and_filters_as_variables() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "model", "endpoint"):
        assert variables[name]["type"] == "query" and variables[name]["includeAll"]
        assert variables[name]["allValue"] == ".*"  # the selectors match with =~
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            for name in ("model", "endpoint"):
                # A filter variable is always matched as a regex (it may be ".*" or a|b).
                assert f'="${name}"' not in target["expr"], (panel["title"], target["expr"])
