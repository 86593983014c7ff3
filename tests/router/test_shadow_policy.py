"""Shadow selection and the shadow concurrency gate."""

from __future__ import annotations

import random

from switchyard.router.decision import RouteRequest
from switchyard.router.router import Router
from switchyard.router.shadow_gate import Admission, ShadowGate
from switchyard.server.endpoints_config import build_routing_table

KEYS = [f"user-{i}" for i in range(100_000)]


def make_router(fraction: float, *, max_concurrency: int = 2, seed: int = 3) -> Router:
    return Router(
        build_routing_table(
            [
                {
                    "name": "recs",
                    "variants": {
                        "stable": {"model": "ranker", "version": "1"},
                        "next": {"model": "ranker", "version": "2"},
                        "other": {"model": "ranker-other"},
                    },
                    "weights": {"stable": 1},
                    "shadow": {
                        "variants": ["next", "other"],
                        "fraction": fraction,
                        "max_concurrency": max_concurrency,
                    },
                }
            ]
        ),
        rng=random.Random(seed),
    )


def mirrored_keys(router: Router, keys: list[str]) -> set[str]:
    return {k for k in keys if router.decide(RouteRequest("recs", routing_key=k)).shadows}


def test_keyed_shadow_fraction_is_within_tolerance_and_deterministic() -> None:
    router = make_router(0.1)
    mirrored = mirrored_keys(router, KEYS)
    assert abs(100 * len(mirrored) / len(KEYS) - 10) <= 1.0
    assert mirrored_keys(make_router(0.1, seed=99), KEYS) == mirrored
    # Raising the fraction only adds keys.
    assert mirrored < mirrored_keys(make_router(0.2), KEYS)


def test_unkeyed_shadow_fraction_is_within_tolerance() -> None:
    router = make_router(0.25)
    mirrored = sum(bool(router.decide(RouteRequest("recs")).shadows) for _ in range(100_000))
    assert abs(100 * mirrored / 100_000 - 25) <= 1.0


def test_all_shadows_mirror_together_but_never_the_primary() -> None:
    router = make_router(1.0)
    decision = router.route("recs")
    assert [s.name for s in decision.shadows] == ["next", "other"]
    assert decision.primary.name == "stable"
    overridden = router.route("recs", parameters={"variant": "next"})
    assert [s.name for s in overridden.shadows] == ["other"]
    assert make_router(0.0).route("recs").shadows == ()


def test_gate_drops_and_counts_over_the_cap() -> None:
    gate = ShadowGate(2)
    assert [gate.try_acquire() for _ in range(3)] == [
        Admission.ADMITTED,
        Admission.ADMITTED,
        Admission.AT_CAPACITY,
    ]
    assert (gate.in_flight, gate.admitted_total, gate.dropped_total) == (2, 2, 1)
    gate.release()
    assert gate.try_acquire().admitted
    assert Admission.AT_CAPACITY.value == "at_capacity"  # the drop reason, as a label


def test_router_gate_follows_the_table_cap_and_survives_swaps() -> None:
    router = make_router(1.0, max_concurrency=2)
    gate = router.shadow_gate("recs")
    assert gate.try_acquire().admitted
    router.swap(make_router(1.0, max_concurrency=1).table)
    assert router.shadow_gate("recs") is gate
    assert gate.limit == 1
    assert gate.try_acquire() is Admission.AT_CAPACITY  # the one in flight still counts
