"""Control planes in one process over a real Redis: what the replica tests cannot time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from loadtests.redis_process import RedisServer
from switchyard.router.endpoint import EndpointSpec, VariantTarget
from switchyard.router.quality import QualityCounts
from switchyard.router.rollout_plan import RolloutPlan
from switchyard.router.router import Router
from switchyard.router.table import RoutingTable
from switchyard.server.audit_log import AuditLog
from switchyard.server.caller import Actor
from switchyard.server.config_sections import ControlSettings
from switchyard.server.control.plane import COMMIT_ATTEMPTS, ControlPlane
from switchyard.server.control.redis_store import RedisControlStore
from switchyard.server.metrics import RoutingMetrics
from tests.features.support import SHARED_REDIS_URL

PLAN = RolloutPlan("stable", "canary", steps_percent=(50, 100), step_interval_s=3600)
BASE = RoutingTable.of(
    [
        EndpointSpec(
            "recs",
            {
                name: VariantTarget(name, "ranker", version)
                for name, version in (("stable", "1"), ("canary", "2"))
            },
            {"stable": 1},
            rollout=PLAN,
        )
    ]
)


def replica(url: str, prefix: str, name: str) -> ControlPlane:
    settings = ControlSettings(store="redis", url=url, prefix=prefix, resync_s=0.2)
    return ControlPlane(
        BASE,
        Router(BASE),
        RedisControlStore(url, prefix, timeout_s=0.3),
        settings,
        tick_s=0.05,
        metrics=RoutingMetrics(CollectorRegistry()),
        audit=AuditLog(None),
        replica=name,
    )


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_concurrent_changes_on_two_replicas_both_land_once(redis_prefix: str) -> None:
    async def scenario() -> None:
        a, b = (
            replica(SHARED_REDIS_URL, redis_prefix, "a"),
            replica(SHARED_REDIS_URL, redis_prefix, "b"),
        )
        await a.start()
        await b.start()
        try:
            # As many writers at once as COMMIT_ATTEMPTS: each attempt one loses is another's
            # win, so every one of them lands (a fourth may be told to retry).
            writers = ((a, 3), (b, 7), (a, 5))
            assert len(writers) == COMMIT_ATTEMPTS
            results = await asyncio.gather(
                *(
                    plane.set_weights(
                        "recs", {"stable": weight, "canary": 1}, actor=Actor(plane.replica)
                    )
                    for plane, weight in writers
                )
            )
            assert all(results)  # each applied, a conflict retried on the newer record
            trail = await a.audit_trail(10)
            assert len(trail) == 3
            # The last commit may be the other replica's: each installs it on notification.
            await until(lambda: a.version == 3 and b.version == 3)
            # Both replicas serve the last committed weights.
            last = trail[-1].changes
            assert a.table == b.table and a.overrides() == b.overrides()
            assert any("weights.stable" in line for line in last)
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_rollout_counts_made_while_the_store_is_down_reach_it_when_it_returns(
    tmp_path: Path,
) -> None:
    redis_server = RedisServer(tmp_path, persistent=True)
    redis_server.start()

    async def scenario() -> None:
        plane = replica(redis_server.url, "p:", "a")
        await plane.start()
        try:
            await plane.rollout_action("recs", "start", actor=Actor("alice"))
            revision = plane.version
            redis_server.stop()
            for _ in range(30):
                plane.record("recs", "canary", 0.002, ok=True)
            plane.record("recs", "other", 0.002, ok=True)  # not under the rollout: not counted
            await until(lambda: not plane.store_up)
            assert plane.table.endpoint("recs").weights == {"canary": 50.0, "stable": 50.0}
            redis_server.start()
            check = RedisControlStore(redis_server.url, "p:", timeout_s=1.0)
            counts: dict[str, int] = {}

            async def counted() -> None:
                nonlocal counts
                while counts.get("requests") != 30:
                    counts = await check.stats(f"recs:{revision}:canary")
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(counted(), 5.0)
            await check.close()
            assert plane.store_up
        finally:
            await plane.close()

    try:
        asyncio.run(scenario())
    finally:
        redis_server.stop()


def test_feedback_of_another_version_never_judges_the_running_rollout(redis_prefix: str) -> None:
    """Late feedback for a request an earlier rollout's canary (another version under the
    same variant name) served must not count for the rollout running now."""

    async def scenario() -> None:
        plane = replica(SHARED_REDIS_URL, redis_prefix, "a")
        await plane.start()
        try:
            await plane.rollout_action("recs", "start", Actor("alice"))
            one = QualityCounts()
            one.add_request([(0.9, 1), (0.1, 0)], k=2)
            plane.record_quality("recs", "canary", "2", one)  # the canary's version: counted
            plane.record_quality("recs", "canary", "7", one)  # an earlier canary's: not
            plane.record_quality("recs", "stable", "1", one)
            pending = plane._pending_quality
            assert sorted((role, counts.requests) for (_, _, role), counts in pending.items()) == [
                ("canary", 1),
                ("stable", 1),
            ]
        finally:
            await plane.close()

    asyncio.run(scenario())
