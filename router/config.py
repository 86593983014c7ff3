"""A routing table written back as plain `endpoints:` data, as the config file spells it.

The admin API shows the table in force this way and the audit log diffs it. The other way,
the config file into a table, is the schema's compile step (server/endpoints_config.py): router/
stays free of pydantic.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from switchyard.router.endpoint import EndpointSpec
from switchyard.router.table import RoutingTable


def table_to_config(table: RoutingTable) -> list[dict[str, Any]]:
    """The `endpoints:` section that builds `table` again, in endpoint name order."""
    return [endpoint_to_config(table.endpoints[name]) for name in sorted(table.endpoints)]


def endpoint_to_config(spec: EndpointSpec) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": spec.name,
        "variants": {
            name: {"model": target.model}
            | ({"version": target.version} if target.version is not None else {})
            for name, target in spec.variants.items()
        },
        "weights": dict(spec.weights),
        "routing_key": {"parameter": spec.routing_key.parameter, "header": spec.routing_key.header},
        "override": {
            "allowed": spec.override.allowed,
            "parameter": spec.override.parameter,
            "header": spec.override.header,
        },
    }
    if spec.shadow is not None:
        config["shadow"] = {
            "variants": list(spec.shadow.variants),
            "fraction": spec.shadow.fraction,
            "max_concurrency": spec.shadow.max_concurrency,
        }
    if spec.rollout is not None:
        plan = spec.rollout
        # Unset checks are left out, as they would be written by hand.
        rollout = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
        rollout["steps_percent"] = list(plan.steps_percent)
        config["rollout"] = {key: value for key, value in rollout.items() if value is not None}
    return config
