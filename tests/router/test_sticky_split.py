"""Weighted splits and sticky assignment, over 100k synthetic keys."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.router.decision import RouteReason, RouteRequest
from switchyard.router.hashing import key_point
from switchyard.router.router import Router
from switchyard.router.sticky import sticky_variant
from switchyard.server.endpoints_config import build_routing_table

KEYS = [f"user-{i}" for i in range(100_000)]


def endpoint_config(weights: Mapping[str, float]) -> list[dict[str, Any]]:
    return [
        {
            "name": "recs",
            "variants": {
                name: {"model": "ranker", "version": str(i)} for i, name in enumerate(weights)
            },
            "weights": weights,
        }
    ]


def assign(router: Router, keys: list[str]) -> list[str]:
    return [router.decide(RouteRequest("recs", routing_key=key)).primary.name for key in keys]


def assert_split(names: list[str], weights: Mapping[str, float], tolerance_pp: float = 1.0) -> None:
    counts = Counter(names)
    total = sum(weights.values())
    for name, weight in weights.items():
        share_pp = 100 * counts[name] / len(names)
        assert abs(share_pp - 100 * weight / total) <= tolerance_pp, (name, share_pp)


@pytest.mark.parametrize(
    "weights",
    [{"stable": 95, "canary": 5}, {"a": 50, "b": 30, "c": 20}, {"a": 1, "b": 1, "c": 1, "d": 0}],
)
def test_keyed_split_matches_weights(weights: dict[str, float]) -> None:
    router = Router(build_routing_table(endpoint_config(weights)))
    names = assign(router, KEYS)
    assert_split(names, weights)
    assert "d" not in names  # a zero weight takes no keys


def test_unkeyed_split_matches_weights_and_is_random() -> None:
    weights = {"a": 70, "b": 20, "c": 10}
    router = Router(build_routing_table(endpoint_config(weights)), rng=random.Random(7))
    decisions = [router.decide(RouteRequest("recs")) for _ in range(100_000)]
    assert {d.reason for d in decisions} == {RouteReason.RANDOM}
    assert_split([d.primary.name for d in decisions], weights)


def test_same_key_same_variant_on_repeat_and_on_a_fresh_table() -> None:
    weights = {"a": 50, "b": 30, "c": 20}
    first = assign(Router(build_routing_table(endpoint_config(weights))), KEYS)
    again = assign(Router(build_routing_table(endpoint_config(weights))), KEYS)
    # The order variants are declared in does not matter either.
    reordered = dict(reversed(list(weights.items())))
    shuffled = assign(Router(build_routing_table(endpoint_config(reordered))), KEYS[:20_000])
    assert first == again
    assert shuffled == first[:20_000]
    router = Router(build_routing_table(endpoint_config(weights)))
    decision = router.decide(RouteRequest("recs", routing_key="user-1"))
    assert decision.reason is RouteReason.STICKY
    assert all(
        router.decide(RouteRequest("recs", routing_key="user-1")) == decision for _ in range(50)
    )


def test_hash_is_pinned_across_releases() -> None:
    # Changing these reassigns every user of every endpoint: only ever on purpose.
    assert key_point("recs", "user-1") == 0.7919377944307885
    assert key_point("recs", "user-2", "canary") == 0.5983007493538088
    assert key_point("ab", "c") != key_point("a", "bc")
    halves = {"canary": 0.5, "stable": 0.5}
    assert [sticky_variant("recs", f"user-{i}", halves) for i in range(4)] == [
        "canary",
        "canary",
        "canary",
        "stable",
    ]


def test_raising_a_canary_moves_only_the_expected_keys_from_stable_to_canary() -> None:
    previous = None
    for canary_pp in (5, 10, 25, 50):
        shares = {"canary": canary_pp / 100, "stable": 1 - canary_pp / 100}
        current = [sticky_variant("recs", key, shares) for key in KEYS]
        assert abs(100 * current.count("canary") / len(KEYS) - canary_pp) <= 1.0
        if previous is not None:
            moves = Counter(
                (was, now) for was, now in zip(previous[0], current, strict=True) if was != now
            )
            assert set(moves) == {("stable", "canary")}  # never back to stable
            moved_pp = 100 * moves[("stable", "canary")] / len(KEYS)
            assert abs(moved_pp - (canary_pp - previous[1])) <= 0.5
        previous = (current, canary_pp)


def test_n_variants_raising_one_moves_keys_only_into_it() -> None:
    keys = KEYS[:20_000]
    before = [sticky_variant("recs", k, {"a": 0.5, "b": 0.3, "c": 0.2}) for k in keys]
    # Raising c alone (a and b keep their weights relative to each other).
    after = [sticky_variant("recs", k, {"a": 0.5, "b": 0.3, "c": 0.6}) for k in keys]
    assert {now for was, now in zip(before, after, strict=True) if was != now} == {"c"}
    # Adding a variant takes keys only into the new one.
    added = [sticky_variant("recs", k, {"a": 0.5, "b": 0.3, "c": 0.2, "d": 0.25}) for k in keys]
    assert {now for was, now in zip(before, added, strict=True) if was != now} == {"d"}


def test_n_variants_keys_move_only_toward_larger_growth() -> None:
    keys = KEYS[:20_000]
    old = {"a": 0.5, "b": 0.3, "c": 0.2}
    new = {"a": 0.4, "b": 0.2, "c": 0.4}  # growth: b x0.67 < a x0.8 < c x2
    growth = {name: new[name] / old[name] for name in old}
    before = [sticky_variant("recs", k, old) for k in keys]
    after = [sticky_variant("recs", k, new) for k in keys]
    moves = {(was, now) for was, now in zip(before, after, strict=True) if was != now}
    assert moves and all(growth[now] > growth[was] for was, now in moves)


@settings(max_examples=40, deadline=None)
@given(
    st.floats(min_value=0.01, max_value=0.99),
    st.floats(min_value=0.01, max_value=0.99),
)
def test_two_variants_keys_move_one_way_only(canary_before: float, canary_after: float) -> None:
    keys = KEYS[:500]
    before = [sticky_variant("e", k, {"c": canary_before, "s": 1 - canary_before}) for k in keys]
    after = [sticky_variant("e", k, {"c": canary_after, "s": 1 - canary_after}) for k in keys]
    moves = {(was, now) for was, now in zip(before, after, strict=True) if was != now}
    expected = {("s", "c")} if canary_after > canary_before else {("c", "s")}
    assert moves <= expected
