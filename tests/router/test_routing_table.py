"""The endpoints: schema, the immutable routing table, set-weights, the audit diff, swaps."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from switchyard.router.audit import describe_changes
from switchyard.router.config import table_to_config
from switchyard.router.decision import Choice, RouteReason, RouteRequest
from switchyard.router.endpoint import EndpointSpec
from switchyard.router.errors import RoutingConfigError
from switchyard.router.router import Router
from switchyard.router.table import RoutingTable
from switchyard.runtimes.errors import InvalidArgument, NotFound
from switchyard.server.config_base import ConfigError
from switchyard.server.endpoints_config import build_routing_table

FULL: list[dict[str, Any]] = [
    {
        "name": "recs",
        "variants": {
            "stable": {"model": "ranker", "version": "1"},
            "canary": {"model": "ranker", "version": 2},
            "next": {"model": "ranker-next"},
        },
        "weights": {"stable": 95, "canary": 5},
        "routing_key": {"parameter": "user_id", "header": "X-User-Id"},
        "override": {"allowed": False, "parameter": "force_variant", "header": None},
        "shadow": {"variants": ["next"], "fraction": 0.1, "max_concurrency": 4},
        "rollout": {
            "stable": "stable",
            "canary": "canary",
            "steps_percent": [5, 25, 50, 100],
            "step_interval_s": 600,
            "min_requests": 500,
            "max_error_rate": 0.01,
            "max_p95_latency_ratio": 1.2,
        },
    },
    {"name": "rank", "variants": {"only": {"model": "ranker"}}},
]


def test_full_schema_parses() -> None:
    table = build_routing_table(FULL, models={"ranker": ["1", "2"], "ranker-next": ["7"]})
    recs = table.endpoint("recs")
    assert recs.variants["canary"].version == "2"  # YAML ints are version names
    assert recs.variants["next"].version is None  # the model's default version
    assert dict(recs.weights) == {"canary": 5.0, "next": 0.0, "stable": 95.0}
    assert recs.shares["stable"] == pytest.approx(0.95)
    assert recs.routing_key.header == "x-user-id"  # one case for HTTP and gRPC metadata
    assert not recs.override.allowed and recs.override.header is None
    assert recs.shadow is not None and recs.shadow.max_concurrency == 4
    assert recs.rollout is not None and recs.rollout.steps_percent == (5.0, 25.0, 50.0, 100.0)
    # Defaults: one variant takes all traffic; overrides on; default hint names.
    rank = table.endpoint("rank")
    assert dict(rank.weights) == {"only": 1.0}
    assert rank.override.allowed and rank.override.parameter == "variant"
    assert rank.routing_key.parameter == "routing_key" and rank.shadow is None


def test_config_round_trips() -> None:
    table = build_routing_table(FULL)
    assert build_routing_table(table_to_config(table)) == table


def mutate(path: list[Any], value: Any, *, delete: bool = False) -> list[dict[str, Any]]:
    raw = copy.deepcopy(FULL)
    target: Any = raw
    for part in path[:-1]:
        target = target[part]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ([0, "weights"], {"stable": 0, "canary": 0}, "endpoints.0.weights: at least one weight"),
        ([0, "weights", "canary"], -1, "endpoints.0.weights.canary: Input should be greater"),
        ([0, "weights", "canary"], True, "endpoints.0.weights.canary: Input should be a valid"),
        ([0, "weights", "canry"], 5, r"endpoints.0.weights.canry: unknown variant \(variants:"),
        ([0, "variants"], {}, "endpoints.0.variants: Dictionary should have at least 1 item"),
        ([0, "shadow", "fraction"], 1.5, "endpoints.0.shadow.fraction: Input should be less"),
        ([0, "shadow", "variants"], ["nxt"], "endpoints.0.shadow.variants: unknown variant 'nxt'"),
        ([0, "shadow", "fractoin"], 0.1, "endpoints.0.shadow.fractoin: Extra inputs"),
        ([0, "rollout", "canary"], "stable", "endpoints.0.rollout.canary: must differ"),
        ([0, "rollout", "canary"], "nope", "endpoints.0.rollout.canary: unknown variant 'nope'"),
        ([0, "rollout", "steps_percent"], [50, 25], "endpoints.0.rollout.steps_percent: steps"),
        ([0, "rollout", "min_requests"], 1.5, "endpoints.0.rollout.min_requests: Input should"),
        ([0, "override", "allowed"], "yes", "endpoints.0.override.allowed: Input should be a"),
        (
            [0, "override", "parameter"],
            "user_id",
            "endpoints.0.override.parameter: 'user_id' is also the routing key's parameter",
        ),
        ([0, "variants", "bad name"], {"model": "m"}, "endpoints.0.variants.bad name.\\[key\\]"),
        ([0, "variants", "next", "model"], None, "endpoints.0.variants.next.model: Input should"),
        ([1, "name"], "recs", "endpoints.1.name: endpoint name repeats"),
        ([1, "name"], None, "endpoints.1.name: Input should be a valid string"),
    ],
)
def test_validation_errors_name_the_key(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_routing_table(mutate(path, value))


def test_models_are_checked_when_given() -> None:
    with pytest.raises(ConfigError, match=r"next.model: unknown model 'ranker-next'"):
        build_routing_table(FULL, models={"ranker": ["1", "2"]})
    with pytest.raises(ConfigError, match="canary.version: model 'ranker' has no version"):
        build_routing_table(FULL, models={"ranker": ["1"], "ranker-next": []})
    with pytest.raises(ConfigError, match="endpoints.1.name: 'rank' is also a model name"):
        build_routing_table(FULL, models={"ranker": ["1", "2"], "ranker-next": [], "rank": []})


def test_every_endpoint_error_is_reported() -> None:
    raw = mutate([0, "weights", "canry"], 5)
    raw[1]["variants"]["only"]["model"] = "unknown"
    with pytest.raises(ConfigError) as caught:
        build_routing_table(raw, models={"ranker": ["1", "2"], "ranker-next": []})
    assert [line.split(":")[0] for line in caught.value.errors] == [
        "endpoints.0.weights.canry",
        "endpoints.1.variants.only.model",
    ]


def test_admin_changes_fail_as_invalid_argument() -> None:
    assert issubclass(RoutingConfigError, InvalidArgument)
    assert build_routing_table(None) == RoutingTable({})
    with pytest.raises(ConfigError, match="endpoints: Input should be a valid list"):
        build_routing_table({"recs": {}})


def test_with_weights_returns_a_new_table_and_diff_describes_it() -> None:
    old = build_routing_table(FULL)
    new = old.with_weights("recs", {"stable": 90, "canary": 10})
    assert old.endpoint("recs").weights["canary"] == 5  # unchanged
    assert new.endpoint("recs").shares["canary"] == pytest.approx(0.10)
    assert new.endpoint("rank") is old.endpoint("rank")
    assert describe_changes(old, new) == [
        "endpoints.recs.weights.canary: 5 -> 10",
        "endpoints.recs.weights.stable: 95 -> 90",
    ]
    assert describe_changes(old, old) == []
    with pytest.raises(RoutingConfigError, match="endpoints.recs.weights.canary: must be finite"):
        old.with_weights("recs", {"stable": 1, "canary": float("nan")})
    with pytest.raises(NotFound):
        old.with_weights("nope", {"a": 1})


def test_diff_reports_added_removed_and_nested_changes() -> None:
    old = build_routing_table(FULL)
    changed = mutate([0, "shadow", "fraction"], 0.2)
    changed[0]["rollout"]["max_error_rate"] = None
    new = build_routing_table([changed[0], {"name": "fresh", "variants": {"v": {"model": "m"}}}])
    assert describe_changes(old, new) == [
        "endpoints.fresh: added",
        "endpoints.rank: removed",
        "endpoints.recs.rollout.max_error_rate: 0.01 -> (none)",
        "endpoints.recs.shadow.fraction: 0.1 -> 0.2",
    ]


def test_swap_mid_request_does_not_disturb_it() -> None:
    old = build_routing_table(FULL)

    class SwapInTheMiddle:
        def choose(self, endpoint: EndpointSpec, request: RouteRequest) -> Choice | None:
            router.swap(RoutingTable({}))  # a config change lands mid-request
            return Choice("stable", RouteReason.RANDOM)

    router = Router(old, policies=[SwapInTheMiddle()])
    decision = router.route("recs")
    assert decision.primary.name == "stable"  # decided on the snapshot it started with
    assert router.table == RoutingTable({})
    with pytest.raises(NotFound):
        router.route("recs")


def test_table_and_specs_are_immutable() -> None:
    table = build_routing_table(FULL)
    with pytest.raises(TypeError):
        table.endpoints["x"] = table.endpoint("rank")  # type: ignore[index]
    with pytest.raises(TypeError):
        table.endpoint("recs").weights["canary"] = 50  # type: ignore[index]
    with pytest.raises(AttributeError):
        table.endpoint("recs").name = "other"  # type: ignore[misc]


def test_weights_whose_sum_overflows_are_a_config_error_naming_the_key() -> None:
    table = build_routing_table(FULL)
    with pytest.raises(RoutingConfigError, match="endpoints.recs.weights: .*add up to more"):
        table.with_weights("recs", {"stable": 1e308, "canary": 1e308})
    huge = copy.deepcopy(FULL)
    huge[0]["weights"] = {"stable": 1e308, "canary": 1e308}
    with pytest.raises(ConfigError, match="endpoints.0.weights: .*add up to more"):
        build_routing_table(huge)
    # Large but summable weights still split by their ratio.
    huge[0]["weights"] = {"stable": 6e307, "canary": 2e307}
    assert build_routing_table(huge).endpoint("recs").shares["canary"] == pytest.approx(0.25)
