"""Override rules and reading routing hints from parameters and headers."""

from __future__ import annotations

import dataclasses

import pytest

from switchyard.router.decision import RouteReason
from switchyard.router.endpoint import RoutingKeySpec
from switchyard.router.hints import read_route_request
from switchyard.router.router import Router
from switchyard.runtimes.errors import InvalidArgument, NotFound
from switchyard.server.endpoints_config import build_routing_table


def make_router(*, allowed: bool = True) -> Router:
    return Router(
        build_routing_table(
            [
                {
                    "name": "recs",
                    "variants": {
                        "stable": {"model": "ranker", "version": "1"},
                        "canary": {"model": "ranker", "version": "2"},
                    },
                    "weights": {"stable": 100},
                    "routing_key": {"parameter": "user_id", "header": "x-user-id"},
                    "override": {"allowed": allowed},
                }
            ]
        )
    )


def test_override_wins_over_sticky_even_for_a_zero_weight_variant() -> None:
    router = make_router()
    decision = router.route("recs", parameters={"user_id": "u1", "variant": "canary"})
    assert decision.primary.name == "canary"
    assert decision.primary.version == "2"
    assert decision.reason is RouteReason.OVERRIDE
    by_header = router.route("recs", headers={"X-Switchyard-Variant": "canary"})
    assert by_header.reason is RouteReason.OVERRIDE


def test_override_off_is_refused_with_a_clear_message() -> None:
    with pytest.raises(InvalidArgument, match="endpoint 'recs' does not allow choosing a variant"):
        make_router(allowed=False).route("recs", parameters={"variant": "canary"})
    # Without an override the same endpoint routes normally.
    assert make_router(allowed=False).route("recs").primary.name == "stable"


def test_unknown_override_names_the_valid_variants() -> None:
    with pytest.raises(
        InvalidArgument, match=r"no variant 'cannary' \(valid variants: canary, stable\)"
    ):
        make_router().route("recs", parameters={"variant": "cannary"})


def test_unknown_endpoint_is_not_found() -> None:
    with pytest.raises(NotFound, match="endpoint 'nope' does not exist"):
        make_router().route("nope")


def test_routing_key_from_parameter_or_header_parameter_first() -> None:
    router = make_router()
    by_parameter = router.route("recs", parameters={"user_id": 42})
    assert by_parameter.reason is RouteReason.STICKY
    assert router.route("recs", headers={"X-User-Id": "42"}) == by_parameter
    mixed = router.route("recs", parameters={"user_id": "a"}, headers={"x-user-id": "b"})
    assert mixed == router.route("recs", parameters={"user_id": "a"})
    # An empty key is no key.
    assert router.route("recs", parameters={"user_id": ""}).reason is RouteReason.RANDOM


@pytest.mark.parametrize("value", [True, 1.5, ["u1"]])
def test_malformed_routing_key_is_invalid(value: object) -> None:
    with pytest.raises(InvalidArgument, match="parameter 'user_id' must be a string or an integer"):
        make_router().route("recs", parameters={"user_id": value})


def test_a_key_the_caller_holds_stands_in_for_the_requests_own() -> None:
    endpoint = make_router().table.endpoint("recs")
    held = read_route_request(endpoint, {"user_id": "a"}, {"x-user-id": "b"}, routing_key="u7")
    assert held.routing_key == "u7"
    assert read_route_request(endpoint, routing_key="u7").routing_key == "u7"
    # It stands in for a malformed one too: the request's own is not read.
    assert read_route_request(endpoint, {"user_id": 1.5}, routing_key="u7").routing_key == "u7"
    # An endpoint that reads no keys is not sticky, whoever holds one.
    keyless = RoutingKeySpec(parameter=None, header=None)
    unkeyed = dataclasses.replace(endpoint, routing_key=keyless)
    assert read_route_request(unkeyed, routing_key="u7").routing_key is None
    assert make_router().route("recs", routing_key="u7") == make_router().route(
        "recs", parameters={"user_id": "u7"}
    )
