"""The PromQL in the shipped Grafana dashboard and Prometheus rules, ready to run.

The dashboard's template variables are replaced by what "All" selects, and Grafana's
interval variables by fixed windows, so that each expression runs as Prometheus's own API
takes it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loadtests.gateway_process import REPO_ROOT

DASHBOARD_PATH = REPO_ROOT / "observability" / "grafana" / "switchyard.json"
RULES_PATH = REPO_ROOT / "observability" / "prometheus" / "rules.yml"
RULES_TEST_PATH = REPO_ROOT / "observability" / "prometheus" / "rules_test.yml"

# What each variable stands for when the dashboard shows everything. Longest names first,
# so that `$__rate_interval` is never read as `$__rate` (none exists, but order is cheap).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$endpoint": ".*",
    "$model": ".*",
    "$job": ".*",
}


@dataclass(frozen=True)
class NamedQuery:
    """One expression and where it comes from (a panel's title and target, or a rule)."""

    source: str
    expr: str


def substitute_variables(expr: str) -> str:
    """`expr` with every Grafana variable it uses replaced; ValueError naming one unknown."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace("${" + name[1:] + "}", value).replace(name, value)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable left in {expr!r}; add it to GRAFANA_VARIABLES")
    return expr


def load_dashboard(path: Path = DASHBOARD_PATH) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those folded into rows included; rows themselves are not panels."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def dashboard_queries(dashboard: dict[str, Any]) -> list[NamedQuery]:
    return [
        NamedQuery(f"panel {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in panels(dashboard)
        for target in panel["targets"]
    ]


def annotation_queries(dashboard: dict[str, Any]) -> list[NamedQuery]:
    return [
        NamedQuery(f"annotation {annotation['name']!r}", annotation["expr"])
        for annotation in dashboard["annotations"]["list"]
        if annotation.get("datasource", {}).get("type") == "prometheus"
    ]


LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def variable_queries(dashboard: dict[str, Any]) -> list[NamedQuery]:
    """Each query variable's `label_values(selector, label)` as the PromQL that has the
    same answer: one series per value of the label."""
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = LABEL_VALUES.match(variable["query"]["query"])
        if match is None:
            raise ValueError(f"variable {variable['name']}: not a label_values() query")
        expr = f"count by ({match['label']}) ({match['selector']})"
        found.append(NamedQuery(f"variable {variable['name']}", expr))
    return found


def load_rules(path: Path = RULES_PATH) -> list[dict[str, Any]]:
    """Every rule of every group, in file order."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def rule_queries(rules: list[dict[str, Any]]) -> list[NamedQuery]:
    return [
        NamedQuery(
            f"alert {rule['alert']}" if "alert" in rule else f"record {rule['record']}",
            rule["expr"],
        )
        for rule in rules
    ]
