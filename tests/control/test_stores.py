"""Both control store backends against one contract; the redis one on a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable

import pytest

from switchyard.router.rollout import RolloutState, RolloutStatus
from switchyard.server.control.audit_chain import verify_lines
from switchyard.server.control.memory_store import MemoryControlStore
from switchyard.server.control.redis_store import RedisControlStore
from switchyard.server.control.state import AuditEntry, EndpointRecord, Override
from switchyard.server.control.store import ControlStore, ControlStoreError
from tests.features.support import SHARED_REDIS_URL

StoreFactory = Callable[[], ControlStore]


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest, redis_prefix: str) -> StoreFactory:
    """Stores that share state: two from one factory are two replicas of one deployment."""
    if request.param == "memory":
        shared = MemoryControlStore()
        return lambda: shared
    return lambda: RedisControlStore(SHARED_REDIS_URL, redis_prefix, timeout_s=1.0)


def record(weights: dict[str, float], actor: str = "alice") -> EndpointRecord:
    override = Override(weights, actor, "set weights", time_s=1_700_000_000.5)
    return EndpointRecord("fp-1", override, RolloutStatus(RolloutState.RUNNING, 1, 25.0, 12.5))


def entry(action: str) -> AuditEntry:
    return AuditEntry("alice", action, ("endpoints.recs.weights.b: 0 -> 1",), "replica-a")


def test_commits_compare_the_revision_and_count_versions(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        a, b = make_store(), make_store()
        try:
            assert (await a.snapshot()).version == 0
            first = await a.commit("recs", 0, record({"a": 1.0, "b": 0.0}), entry("one"))
            assert first == 1
            # b decided on revision 0 too: it lost, and must read again.
            assert await b.commit("recs", 0, record({"a": 0.0, "b": 1.0}), entry("two")) is None
            snapshot = await b.snapshot()
            assert snapshot.version == 1
            held = snapshot.endpoints["recs"]
            assert held.revision == 1 and held.override is not None
            assert dict(held.override.weights) == {"a": 1.0, "b": 0.0}
            assert held.override.time_s == 1_700_000_000.5
            assert held.rollout == RolloutStatus(RolloutState.RUNNING, 1, 25.0, 12.5)
            assert await b.commit("recs", 1, record({"a": 1 / 3, "b": 2 / 3}), entry("three")) == 2
            assert await a.commit("other", 0, EndpointRecord("fp-2"), entry("four")) == 3
            snapshot = await a.snapshot()
            assert {n: r.revision for n, r in snapshot.endpoints.items()} == {"recs": 2, "other": 3}
            weights = snapshot.endpoints["recs"].override
            assert weights is not None and weights.weights["a"] == 1 / 3  # exact floats
            trail = await a.audit_trail(10)
            assert [e.action for e in trail] == ["one", "three", "four"]  # the loser wrote none
            assert [e.action for e in await a.audit_trail(2)] == ["three", "four"]
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_stats_add_up_across_replicas(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        a, b = make_store(), make_store()
        try:
            await a.add_stats("recs:4:canary", {"requests": 3, "b10": 2, "errors": 1})
            await b.add_stats("recs:4:canary", {"requests": 2, "b10": 1, "b11": 1})
            assert await a.stats("recs:4:canary") == {
                "requests": 5, "errors": 1, "b10": 3, "b11": 1,
            }  # fmt: skip
            assert await b.stats("recs:5:canary") == {}
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_audit_once_writes_one_entry_for_a_key(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        a, b = make_store(), make_store()
        try:
            assert await a.audit_once("edit-1", entry("reload"), ttl_s=60)
            assert not await b.audit_once("edit-1", entry("reload"), ttl_s=60)
            assert await b.audit_once("edit-2", entry("reload 2"), ttl_s=60)
            assert [e.action for e in await a.audit_trail(10)] == ["reload", "reload 2"]
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_concurrent_writers_make_one_chain_each_decision_once(make_store: StoreFactory) -> None:
    """Four writers (two per store) commit to their own endpoints and append file audits at
    once: every record lands once, in one chain that verifies, keyed or not."""

    async def scenario() -> None:
        a, b = make_store(), make_store()
        writers = [(a, "w0"), (b, "w1"), (a, "w2"), (b, "w3")]

        async def write(store: ControlStore, name: str) -> None:
            revision = 0  # the endpoint's own: only this writer changes it
            for step in range(5):
                version = await store.commit(name, revision, record({"a": 1.0}), entry(name))
                assert version is not None, (name, step)
                revision = version
                assert await store.audit_once(f"{name}-{step}", entry(f"{name} file"), 60)

        try:
            await asyncio.gather(*(write(store, name) for store, name in writers))
            trail = await a.audit_trail(1000)
            lines = [e.to_json() for e in trail]
            verdict = verify_lines(lines, None, from_start=True)
            assert verdict.intact and verdict.records == 40, verdict.summary()
            actions = Counter(e.action for e in trail)
            assert actions == {f"{n}{s}": 5 for _, n in writers for s in ("", " file")}
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_keyed_stores_seal_with_hmac(redis_prefix: str) -> None:
    async def scenario() -> None:
        store = RedisControlStore(SHARED_REDIS_URL, redis_prefix, 1.0, audit_key=b"k")
        try:
            await store.commit("recs", 0, record({"a": 1.0}), entry("one"))
            trail = [e.to_json() for e in await store.audit_trail(10)]
        finally:
            await store.close()
        assert json.loads(trail[0])["alg"] == "hmac-sha256"
        assert verify_lines(trail, b"k").intact
        problem = verify_lines(trail, b"not k").problem
        assert problem is not None and problem.kind == "edited"

    asyncio.run(scenario())


def test_watchers_hear_every_commit(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        a, b = make_store(), make_store()
        heard = asyncio.Event()
        count = 0

        def on_change() -> None:
            nonlocal count
            count += 1
            heard.set()

        watcher = asyncio.create_task(b.watch(on_change))
        try:
            await asyncio.sleep(0.2)  # subscribed (redis calls on_change once on subscribing)
            heard.clear()
            before = count
            await a.commit("recs", 0, record({"a": 1.0}), entry("one"))
            await asyncio.wait_for(heard.wait(), 2.0)
            assert count == before + 1
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_redis_lease_is_exclusive_renewed_and_taken_over(redis_prefix: str) -> None:
    async def scenario() -> None:
        a = RedisControlStore(SHARED_REDIS_URL, redis_prefix, timeout_s=1.0)
        b = RedisControlStore(SHARED_REDIS_URL, redis_prefix, timeout_s=1.0)
        try:
            assert await a.hold_lease("a", ttl_s=0.3)
            assert not await b.hold_lease("b", ttl_s=0.3)
            await asyncio.sleep(0.2)
            assert await a.hold_lease("a", ttl_s=0.3)  # renewed: 0.3 s more from now
            await asyncio.sleep(0.2)
            assert not await b.hold_lease("b", ttl_s=0.3)
            assert await a.lease_holder() == "a"
            await asyncio.sleep(0.4)  # a stopped renewing
            assert await b.hold_lease("b", ttl_s=0.3)
            assert not await a.hold_lease("a", ttl_s=0.3)
            assert await a.lease_holder() == "b"
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_an_unreachable_redis_raises_control_store_errors_fast() -> None:
    async def scenario() -> None:
        store = RedisControlStore("redis://127.0.0.1:1/0", "p:", timeout_s=0.5)
        try:
            loop = asyncio.get_running_loop()
            started_s = loop.time()
            for call in (
                store.snapshot(),
                store.commit("recs", 0, EndpointRecord("fp"), entry("x")),
                store.add_stats("k", {"requests": 1}),
                store.hold_lease("a", 1.0),
                store.audit_trail(5),
                store.watch(lambda: None),
            ):
                with pytest.raises(ControlStoreError):
                    await call
            assert loop.time() - started_s < 3.0
        finally:
            await store.close()

    asyncio.run(scenario())
