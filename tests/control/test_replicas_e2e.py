"""Three real gateway processes sharing one real Redis control store.

Each test starts its own three standalone gateways (each in its own folder, the same config
content, the same `control.prefix`, a fresh prefix per test) on a redis-server of this
module's own, persistent so that stopping and starting it keeps its data. They check what
the control store promises: a change made on one replica is served by every replica within
a second, a rollout is judged once whatever replica its traffic goes through, the judging
lease moves when its holder dies, the state outlives every replica, and a Redis outage
changes no routing and fails no request.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from loadtests.gateway_process import Gateway, metric_sum, scrape_metrics, start_gateway
from loadtests.redis_process import RedisServer
from switchyard.demo.build_model import build
from tests.polling import wait_for
from tests.server.test_routing_e2e import (
    ADMIN_TOKEN,
    admin,
    infer,
    request,
    rollout_endpoint,
    workdir_of,
)

T = TypeVar("T")

REPLICAS = 3
TICK_S = 0.1  # routing.rollout_tick_s
LEASE_TTL_S = 1.0  # control.lease_ttl_s
RESYNC_S = 1.0  # control.resync_s
CONVERGENCE_LIMIT_S = 1.0  # a change on one replica is served by all within this
OUTAGE_S = 10.0


@pytest.fixture(scope="module")
def model_paths(demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    workdir = tmp_path_factory.mktemp("replica-models")
    return {"v1": str(demo_model_path), "v2": str(build(workdir / "v2", seed=8))}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("control-redis"), persistent=True)
    server.start()
    yield server
    server.stop()


def replica_config(paths: dict[str, str], redis_url: str, prefix: str) -> dict[str, Any]:
    """One config for every replica: relative paths resolve in each one's own folder."""
    threads = {"intra_op_threads": 1, "inter_op_threads": 1}
    versions = [{"version": "1", "path": paths["v1"]}, {"version": "2", "path": paths["v2"]}]
    checks = {"min_requests": 20, "max_error_rate": 0.05}
    return {
        "models": [
            {
                "name": "ranker",
                "versions": versions,
                "default_version": "1",
                "runtime_options": threads,
            },
            # A 1 us timeout behind a 10 ms queue delay: every request expires in the queue
            # (DEADLINE_EXCEEDED).
            {
                "name": "ranker_expiring",
                "versions": [{"version": "1", "path": paths["v1"]}],
                "batching": {"timeout_s": 0.000001, "max_queue_delay_s": 0.01},
                "runtime_options": threads,
            },
        ],
        "routing": {"rollout_tick_s": TICK_S, "config_reload_s": 0.5},
        "control": {
            "store": "redis",
            "url": redis_url,
            "prefix": prefix,
            "resync_s": RESYNC_S,
            "lease_ttl_s": LEASE_TTL_S,
            "timeout_s": 0.5,
        },
        "admin": {"token": ADMIN_TOKEN, "audit_log_path": "audit.jsonl"},
        "endpoints": [
            {
                "name": "flip",
                "variants": {
                    "stable": {"model": "ranker", "version": "1"},
                    "canary": {"model": "ranker", "version": "2"},
                },
                "weights": {"stable": 1},
            },
            rollout_endpoint(
                "rollout_ok",
                {"model": "ranker", "version": "2"},
                step_interval_s=0.5,
                **checks,
            ),
            rollout_endpoint(
                "rollout_failing", {"model": "ranker_expiring"}, step_interval_s=0.5, **checks
            ),
            # Three steps, 2 s each: the lease holder can be killed while at the first.
            with_steps(
                rollout_endpoint(
                    "rollout_long",
                    {"model": "ranker", "version": "2"},
                    step_interval_s=2.0,
                    **checks,
                ),
                [20, 50, 100],
            ),
            # Three steps; the second waits for 30 canary requests, more than a restart's
            # check of the traffic sends.
            with_steps(
                rollout_endpoint(
                    "rollout_held",
                    {"model": "ranker", "version": "2"},
                    step_interval_s=0.5,
                    min_requests=30,
                    max_error_rate=0.05,
                ),
                [20, 50, 100],
            ),
        ],
    }


def with_steps(endpoint: dict[str, Any], steps_percent: list[float]) -> dict[str, Any]:
    endpoint["rollout"]["steps_percent"] = steps_percent
    return endpoint


@dataclass
class Replicas:
    """Starts groups of gateways on one config; every one started is stopped at teardown."""

    config: dict[str, Any]
    root: Path
    started: list[Gateway] = field(default_factory=list)

    def start(self, label: str, count: int = REPLICAS) -> list[Gateway]:
        """`count` gateways at once, each in its own folder root/<label>-<i>."""
        workdirs = [self.root / f"{label}-{i}" for i in range(count)]
        for workdir in workdirs:
            workdir.mkdir()
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(start_gateway, self.config, w) for w in workdirs]
        gateways = [f.result() for f in futures if f.exception() is None]
        self.started.extend(gateways)
        for future in futures:
            if (error := future.exception()) is not None:
                raise error
        return gateways

    def stop_all(self) -> None:
        for gateway in self.started:
            # One killed already answers at once; one that hangs is killed by stop().
            with contextlib.suppress(Exception):
                gateway.stop()


@pytest.fixture
def replicas(
    model_paths: dict[str, str], redis_server: RedisServer, tmp_path: Path
) -> Iterator[Replicas]:
    prefix = f"switchyard-test-{uuid.uuid4().hex[:12]}:"
    group = Replicas(replica_config(model_paths, redis_server.url, prefix), tmp_path)
    yield group
    group.stop_all()


# Helpers ---------------------------------------------------------------------------------


def wait_until(
    what: str, condition: Callable[[], bool], timeout_s: float, pause_s: float = 0.02
) -> None:
    wait_for(what, lambda: True if condition() else None, timeout_s, pause_s)


def variant_of(gateway: Gateway, endpoint: str) -> str | None:
    """The variant that served one request, None when it failed."""
    status, _, body = infer(gateway, endpoint)
    if status != 200:
        return None
    variant: str = body["parameters"]["switchyard_variant"]
    return variant


def listing(gateway: Gateway) -> dict[str, Any]:
    status, _, body = admin(gateway, "GET", "/endpoints")
    assert status == 200, body
    return body


def rollout_of(gateway: Gateway, endpoint: str) -> dict[str, Any]:
    state: dict[str, Any] = listing(gateway)["rollouts"][endpoint]
    return state


def audit_trail(gateway: Gateway) -> list[dict[str, Any]]:
    status, _, body = admin(gateway, "GET", "/audit?limit=1000")
    assert status == 200, body
    entries: list[dict[str, Any]] = body["entries"]
    return entries


def entries_about(entries: list[dict[str, Any]], endpoint: str) -> list[dict[str, Any]]:
    """The trail's entries that change `endpoint`."""
    path = f"endpoints.{endpoint}."
    return [e for e in entries if any(line.startswith(path) for line in e["changes"])]


def put_weights(gateway: Gateway, endpoint: str, weights: dict[str, float]) -> None:
    status, _, body = admin(gateway, "PUT", f"/endpoints/{endpoint}/weights", {"weights": weights})
    assert status == 200, body


def start_rollout(gateway: Gateway, endpoint: str) -> None:
    status, _, body = admin(gateway, "POST", f"/endpoints/{endpoint}/rollout/start")
    assert status == 200 and body["state"] == "running", body


def serves_only(gateway: Gateway, endpoint: str, variant: str, requests: int = 10) -> bool:
    return all(variant_of(gateway, endpoint) == variant for _ in range(requests))


def drive(
    gateways: list[Gateway], endpoints: list[str], done: Callable[[], bool], timeout_s: float
) -> int:
    """Round-robin traffic to `endpoints` over `gateways` until `done()`; the requests sent."""
    sent = 0
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"traffic to {endpoints} never got done after {sent} requests")
        for gateway, endpoint in itertools.product(gateways, endpoints):
            infer(gateway, endpoint)
            sent += 1
    return sent


def plain_sample(gateway: Gateway, name: str) -> float:
    """A sample without labels (metric_sum reads labelled ones)."""
    for line in scrape_metrics(gateway).splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} on gateway {gateway.http_url}")


def store_up(gateway: Gateway) -> float:
    return plain_sample(gateway, "switchyard_control_store_up")


def store_errors(gateway: Gateway) -> float:
    return metric_sum(scrape_metrics(gateway), "switchyard_control_store_errors_total")


def store_errors_by_operation(gateway: Gateway) -> dict[str, float]:
    name = "switchyard_control_store_errors_total{"
    return {
        line.split('operation="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in scrape_metrics(gateway).splitlines()
        if line.startswith(name)
    }


def concurrent_admin_reads(gateway: Gateway, count: int = 8) -> list[tuple[int, str]]:
    """`count` GET /lease at once: each takes a store connection of its own."""
    with ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(lambda _: admin(gateway, "GET", "/lease"), range(count)))
    return [(status, str(body.get("error", ""))[:120]) for status, _, body in answers]


def log_tails(gateways: list[Gateway], lines: int = 15) -> str:
    return "\n".join(
        f"--- gateway {i} ({g.http_url}):\n" + "\n".join(g.log().splitlines()[-lines:])
        for i, g in enumerate(gateways, 1)
    )


@dataclass
class Load:
    """Threads sending requests to one endpoint, one thread per gateway, until stopped."""

    gateways: list[Gateway]
    endpoint: str
    pause_s: float = 0.005
    served: list[tuple[int, float, str]] = field(default_factory=list)  # gateway, time, variant
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for index, _ in enumerate(self.gateways):
            thread = threading.Thread(target=self._send, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _send(self, index: int) -> None:
        gateway = self.gateways[index]
        while not self._stop.is_set():
            try:
                status, _, body = infer(gateway, self.endpoint)
            except (OSError, ValueError) as error:  # no answer, or not JSON
                self.failures.append(f"gateway {index + 1}: {error!r}")
                continue
            if status == 200:
                variant = body["parameters"]["switchyard_variant"]
                self.served.append((index, time.monotonic(), variant))
            else:
                self.failures.append(f"gateway {index + 1}: {status} {body}")
            time.sleep(self.pause_s)


# a. Convergence --------------------------------------------------------------------------


def test_a_weight_change_on_one_replica_is_served_by_all_within_a_second(
    replicas: Replicas,
) -> None:
    gateways = replicas.start("gw")
    for gateway in gateways:
        assert serves_only(gateway, "flip", "stable")
    with Load(gateways, "flip", pause_s=0.0) as load:

        def answered_since(since: float, count: int) -> bool:
            """Whether every gateway gave `count` answers after `since`."""
            received = Counter(g for g, t, _ in list(load.served) if t > since)
            return all(received[index] >= count for index in range(REPLICAS))

        wait_until("traffic on every gateway", lambda: answered_since(0.0, 10), 10)
        put_weights(gateways[0], "flip", {"canary": 100})
        changed_at = time.monotonic()  # the PUT's 200
        wait_until(
            "traffic after the change on every gateway",
            lambda: answered_since(changed_at + CONVERGENCE_LIMIT_S, 10),
            10,
        )
    assert load.failures == []
    times: dict[int, float] = {}
    for index in range(REPLICAS):
        answers = [(t, v) for g, t, v in load.served if g == index]
        assert answers[-1][1] == "canary", (index + 1, answers[-5:])
        stale = [t for t, v in answers if v != "canary"]
        # Every answer after the first new one after the last stale one names the new variant.
        last_stale = max(stale, default=float("-inf"))
        first_new = min(t for t, v in answers if v == "canary" and t > last_stale)
        times[index + 1] = max(0.0, first_new - changed_at)
    figures = ", ".join(f"gateway {i}: {s * 1000:.0f} ms" for i, s in times.items())
    print(f"\n[a] convergence after the PUT on gateway 1: {figures}")
    for index in (2, 3):
        assert times[index] < CONVERGENCE_LIMIT_S, f"too slow: {figures}\n{log_tails(gateways)}"
    assert times[1] < CONVERGENCE_LIMIT_S, figures
    versions = {listing(g)["version"] for g in gateways}
    assert len(versions) == 1, versions
    for gateway in gateways:
        metrics = scrape_metrics(gateway)
        assert metric_sum(metrics, "switchyard_routing_override_in_force", endpoint="flip") == 1
    assert plain_sample(gateways[2], "switchyard_routing_table_version") == versions.pop()


# b. Rollouts judged once -----------------------------------------------------------------


def test_b_rollouts_over_three_replicas_are_judged_once(replicas: Replicas) -> None:
    gateways = replicas.start("gw")
    start_rollout(gateways[0], "rollout_ok")
    start_rollout(gateways[1], "rollout_failing")
    terminal = {"completed", "rolled_back", "aborted"}
    probe = itertools.cycle(gateways)

    def both_ended() -> bool:
        state = listing(next(probe))["rollouts"]
        return all(state[name]["state"] in terminal for name in ("rollout_ok", "rollout_failing"))

    sent = drive(gateways, ["rollout_ok", "rollout_failing"], both_ended, timeout_s=30)
    wait_until(
        "every replica sees both rollouts ended",
        lambda: all(
            rollout_of(g, name)["state"] in terminal
            for g in gateways
            for name in ("rollout_ok", "rollout_failing")
        ),
        2,
    )
    for gateway in gateways:
        ok, failing = rollout_of(gateway, "rollout_ok"), rollout_of(gateway, "rollout_failing")
        assert (ok["state"], ok["canary_percent"]) == ("completed", 100), ok
        assert (failing["state"], failing["canary_percent"]) == ("rolled_back", 0), failing
        assert serves_only(gateway, "rollout_ok", "canary", 5)
        assert serves_only(gateway, "rollout_failing", "stable", 5)

    entries = audit_trail(gateways[2])
    summary = "\n".join(f"{e['identity']} {e['replica']} {e['action']}" for e in entries)
    ok_entries = entries_about(entries, "rollout_ok")
    failing_entries = entries_about(entries, "rollout_failing")
    assert [e["action"] for e in ok_entries][:1] == ["rollout running: started"], summary
    assert [e["action"].split(":")[0] for e in ok_entries] == [
        "rollout running",
        "rollout completed",
    ], summary
    assert [e["action"].split(":")[0] for e in failing_entries] == [
        "rollout running",
        "rollout rolled_back",
    ], summary
    assert failing_entries[0]["action"] == "rollout running: started", summary
    assert "error rate" in failing_entries[1]["action"], summary
    assert ok_entries[0]["identity"] == failing_entries[0]["identity"] == "admin (for alice)"
    assert ok_entries[1]["identity"] == failing_entries[1]["identity"] == "rollout"
    assert len(entries) == 4, summary  # nothing else was written

    scraped = [scrape_metrics(g) for g in gateways]

    def total(endpoint: str, to_state: str) -> float:
        return sum(
            metric_sum(
                text, "switchyard_rollout_events_total", endpoint=endpoint, to_state=to_state
            )
            for text in scraped
        )

    assert total("rollout_ok", "completed") == 1
    assert total("rollout_ok", "running") == 1
    assert total("rollout_failing", "rolled_back") == 1
    assert total("rollout_failing", "running") == 1
    assert total("rollout_ok", "rolled_back") == total("rollout_failing", "completed") == 0
    print(f"\n[b] both rollouts ended after {sent} requests over {REPLICAS} gateways")


# c. The lease holder dies mid-rollout ----------------------------------------------------


def test_c_killing_the_lease_holder_mid_rollout_hands_judging_over(replicas: Replicas) -> None:
    gateways = replicas.start("gw")
    by_replica = {listing(g)["control"]["replica"]: g for g in gateways}
    assert len(by_replica) == REPLICAS, by_replica

    def holder() -> str | None:
        status, _, body = admin(gateways[0], "GET", "/lease")
        assert status == 200, body
        found: str | None = body["holder"]
        return found

    wait_for("a replica holds the lease", holder, 5)
    start_rollout(gateways[0], "rollout_long")
    started_at = time.monotonic()
    for _ in range(10):  # some step-0 traffic through every replica, the holder's included
        for gateway in gateways:
            assert variant_of(gateway, "rollout_long") is not None
    victim_id = holder()
    assert victim_id in by_replica, (victim_id, list(by_replica))
    victim = by_replica[victim_id]
    victim.process.kill()  # SIGKILL: no lease release, no flush
    victim.process.wait(10)
    killed_at = time.monotonic()
    survivors = [g for g in gateways if g is not victim]
    survivor_ids = {listing(g)["control"]["replica"] for g in survivors}
    # 30 requests, about 6 to the canary (a step needs 20), and the first step lasts 2 s:
    # still at step 0.
    at_kill = rollout_of(survivors[0], "rollout_long")
    assert (at_kill["state"], at_kill["step"]) == ("running", 0), at_kill
    assert killed_at - started_at < 2.0

    with Load(survivors, "rollout_long") as load:

        def new_holder() -> str | None:
            status, _, body = admin(survivors[0], "GET", "/lease")
            found = body.get("holder") if status == 200 else None
            return found if found in survivor_ids else None

        taken_by = wait_for("a survivor takes the lease", new_holder, 5, pause_s=0.01)
        takeover_s = time.monotonic() - killed_at
        print(f"\n[c] lease taken over {takeover_s * 1000:.0f} ms after the SIGKILL")
        # The dead holder's lease lapses lease_ttl_s after its last renewal; a survivor takes it
        # at its next tick. 0.4 s of slack for the polling and two busy cores.
        assert takeover_s < LEASE_TTL_S + TICK_S + 0.4, (takeover_s, log_tails(survivors))

        def completed() -> dict[str, Any] | None:
            state = rollout_of(survivors[1], "rollout_long")
            return state if state["state"] != "running" else None

        final = wait_for("the rollout ends", completed, 30, pause_s=0.1)
    assert (final["state"], final["canary_percent"]) == ("completed", 100), (
        final,
        log_tails(survivors),
    )
    assert load.failures == []
    served = Counter(v for _, _, v in load.served)
    assert served["canary"] > 0 and served["stable"] > 0, served

    entries = entries_about(audit_trail(survivors[0]), "rollout_long")
    summary = "\n".join(
        f"{e['identity']} {e['replica']} {e['action']} {e['changes']}" for e in entries
    )
    actions = [e["action"] for e in entries]
    assert len(actions) == 3, summary
    assert actions[0] == "rollout running: started", summary
    assert actions[1].startswith("rollout running: step 1 of 3 passed"), summary
    assert actions[2].startswith("rollout completed: step 2 of 3 passed"), summary
    assert "endpoints.rollout_long.weights.canary: 20 -> 50" in entries[1]["changes"], summary
    assert "endpoints.rollout_long.weights.canary: 50 -> 100" in entries[2]["changes"], summary
    # The steps after the kill were judged by the survivor that took the lease.
    assert {entries[1]["replica"], entries[2]["replica"]} == {taken_by}, summary
    completed_total = sum(
        metric_sum(
            scrape_metrics(g),
            "switchyard_rollout_events_total",
            endpoint="rollout_long",
            to_state="completed",
        )
        for g in survivors
    )
    assert completed_total == 1


# d. Restart every replica ----------------------------------------------------------------


def test_d_the_state_outlives_every_replica(replicas: Replicas) -> None:
    before_gateways = replicas.start("before")
    put_weights(before_gateways[0], "flip", {"canary": 100})
    start_rollout(before_gateways[1], "rollout_held")

    def at_step_one() -> bool:
        state = rollout_of(before_gateways[2], "rollout_held")
        # Idle until this replica has synced the start made through another one.
        assert state["state"] in ("idle", "running"), state
        return bool(state["state"] == "running" and state["step"] == 1)

    drive(before_gateways, ["rollout_held"], at_step_one, timeout_s=30)

    def agreed() -> dict[str, Any] | None:
        views = [listing(g) for g in before_gateways]
        kept = [(v["version"], v["overrides"], v["rollouts"]) for v in views]
        return views[0] if all(k == kept[0] for k in kept) else None

    before = wait_for("the replicas agree", agreed, 3)
    assert before["rollouts"]["rollout_held"]["step"] == 1
    assert before["rollouts"]["rollout_held"]["canary_percent"] == 50
    assert set(before["overrides"]) == {"flip", "rollout_held"}
    assert before["overrides"]["flip"]["weights"] == {"canary": 100.0, "stable": 0.0}
    old_replicas = {listing(g)["control"]["replica"] for g in before_gateways}
    for gateway in before_gateways:
        assert gateway.stop() == 0, gateway.log()

    after_gateways = replicas.start("after")
    for gateway in after_gateways:
        view = listing(gateway)
        assert view["control"]["replica"] not in old_replicas  # new processes
        assert view["control"]["up"] is True
        assert view["version"] == before["version"]
        assert view["overrides"] == before["overrides"]
        assert view["rollouts"] == before["rollouts"]
        assert view["endpoints"] == before["endpoints"]
        assert serves_only(gateway, "flip", "canary")
    # The rollout serves its step's split: 50% canary (24 requests stay below its 30).
    served = Counter(
        variant_of(gateway, "rollout_held") for _ in range(8) for gateway in after_gateways
    )
    assert None not in served, served
    assert 4 <= served["canary"] <= 20 and served["canary"] + served["stable"] == 24, served
    assert rollout_of(after_gateways[0], "rollout_held") == before["rollouts"]["rollout_held"]


# e. Redis outage under load --------------------------------------------------------------


def test_e_a_redis_outage_fails_no_request_and_changes_no_route(
    replicas: Replicas, redis_server: RedisServer
) -> None:
    gateways = replicas.start("gw")
    put_weights(gateways[1], "flip", {"canary": 100})
    wait_until(
        "the override on every replica",
        lambda: all(serves_only(g, "flip", "canary") for g in gateways),
        3,
    )
    version = listing(gateways[0])["version"]
    errors_before = [store_errors(g) for g in gateways]
    assert [store_up(g) for g in gateways] == [1, 1, 1]
    # Admin reads at once: each replica keeps several store connections through the outage.
    for gateway in gateways:
        assert {status for status, _ in concurrent_admin_reads(gateway)} == {200}

    redis_running = True
    try:
        with Load(gateways, "flip", pause_s=0.01) as load:
            wait_until("traffic", lambda: len(load.served) >= 30, 10)
            redis_server.stop()
            redis_running = False
            stopped_at = time.monotonic()
            wait_until(
                "store_up 0 on every replica",
                lambda: all(store_up(g) == 0 for g in gateways),
                5,
                pause_s=0.1,
            )
            seen_down_s = time.monotonic() - stopped_at
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))  # the outage
            during = len(load.served)
            assert [store_up(g) for g in gateways] == [0, 0, 0]
            errors_during = [store_errors(g) for g in gateways]
            for view in (listing(g) for g in gateways):
                assert view["control"]["up"] is False and view["version"] == version
            redis_server.start()
            redis_running = True
            restarted_at = time.monotonic()
            wait_until(
                "store_up 1 on every replica",
                lambda: all(store_up(g) == 1 for g in gateways),
                5,
                pause_s=0.1,
            )
            back_up_s = time.monotonic() - restarted_at

            def state_came_back() -> bool:
                views = [listing(g) for g in gateways]
                return all(
                    v["control"]["up"] is True
                    and v["version"] == version
                    and v["overrides"]["flip"]["weights"] == {"canary": 100.0, "stable": 0.0}
                    for v in views
                )

            wait_until("every replica resynced the kept state", state_came_back, 3)
            errors_back = [store_errors_by_operation(g) for g in gateways]
    finally:
        if not redis_running:
            redis_server.start()
    print(
        f"\n[e] {len(load.served)} requests ({during} by the end of the outage), "
        f"store_up 0 everywhere {seen_down_s:.2f} s after the stop, "
        f"1 again {back_up_s:.2f} s after the start"
    )
    assert load.failures == [], load.failures[:5]
    assert Counter(v for _, _, v in load.served) == {"canary": len(load.served)}
    for index in range(REPLICAS):
        assert sum(1 for g, _, _ in load.served if g == index) > 20
        assert errors_during[index] > errors_before[index], (errors_before, errors_during)

    # A change after Redis is back: the store kept its data (the version counts on) and every
    # replica serves the change.
    def changed() -> bool | None:
        status, _, body = admin(
            gateways[2], "PUT", "/endpoints/flip/weights", {"weights": {"stable": 100}}
        )
        assert status in (200, 503), body
        return True if status == 200 else None

    wait_for("the change is accepted", changed, 5, pause_s=0.1)
    changed_at = time.monotonic()
    wait_until(
        "every replica serves the change",
        lambda: all(serves_only(g, "flip", "stable", 3) for g in gateways),
        5,
    )
    resync_s = time.monotonic() - changed_at
    print(f"[e] the change after the outage served by all three within {resync_s:.2f} s")
    for gateway in gateways:
        view = listing(gateway)
        assert view["version"] == version + 1, (version, view["version"])
        assert view["overrides"]["flip"]["weights"] == {"stable": 100.0, "canary": 0.0}
    # Redis answers again: so does every admin call on every replica, many at once too (the
    # connections a replica held before the outage are dead; none may fail a call).
    answers = {i: concurrent_admin_reads(g) for i, g in enumerate(gateways, 1)}
    failed = {i: [a for a in got if a[0] != 200] for i, got in answers.items()}
    assert all(not f for f in failed.values()), (
        f"admin reads failed after Redis came back: {failed}\n"
        f"store errors by operation: {errors_back} -> "
        f"{[store_errors_by_operation(g) for g in gateways]}\n" + log_tails(gateways, 4)
    )
    # Redis has answered every call since it came back: no store error since, store up.
    errors_end = [store_errors_by_operation(g) for g in gateways]
    assert errors_end == errors_back, (
        f"store errors after Redis came back: {errors_back} -> {errors_end}\n"
        + log_tails(gateways, 6)
    )
    assert [store_up(g) for g in gateways] == [1, 1, 1]


# f. One audit chain across replicas --------------------------------------------------------


def switchyard_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard.server.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_f_concurrent_changes_on_two_replicas_make_one_verified_trail(
    replicas: Replicas, tmp_path: Path
) -> None:
    key_file = tmp_path / "audit.key"
    key_file.write_text("the deployment's audit key\n")
    replicas.config["admin"]["audit_key_file"] = str(key_file)
    gateways = replicas.start("gw", count=2)
    changes_each = 12

    def change(index: int) -> list[str]:
        """Changes of one admin on one replica, reasons unique: (header, body) alternate."""
        gateway, identity = gateways[index], ("alice", "bob")[index]
        endpoint = ("flip", "rollout_ok")[index]
        reasons = []
        for number in range(changes_each):
            reason = f"{identity} change {number}"
            headers = {
                "Authorization": f"Bearer {ADMIN_TOKEN}",
                "X-Switchyard-Actor": identity,
                "X-Switchyard-Reason": reason if number % 2 else "the header loses",
            }
            body: dict[str, Any] = {"weights": {"stable": 1 + number % 3, "canary": 1}}
            if number % 2 == 0:
                body["reason"] = reason  # the body's reason wins over the header's
            if number == changes_each - 1:
                path, method = f"/admin/v1/endpoints/{endpoint}/override", "DELETE"
                body = {"reason": reason}
            else:
                path, method = f"/admin/v1/endpoints/{endpoint}/weights", "PUT"
            status, _, answer = request(gateway, method, path, body, headers)
            assert status == 200, answer
            reasons.append(reason)
        return reasons

    with ThreadPoolExecutor(2) as pool:
        expected = [reason for done in pool.map(change, range(2)) for reason in done]

    exported = tmp_path / "trail.jsonl"
    export = switchyard_cli(
        "audit", "export", "--config", str(workdir_of(gateways[0]) / "switchyard.yaml")
    )
    assert export.returncode == 0, export.stderr
    exported.write_text(export.stdout)
    verify = switchyard_cli("audit", "verify", str(exported), "--key-file", str(key_file))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    count = 2 * changes_each
    assert verify.stdout.strip() == f"{count} records, seq 1..{count}, chain intact"
    records = [json.loads(line) for line in export.stdout.splitlines()]
    assert sorted(r["reason"] for r in records) == sorted(expected)  # each decision once
    for record in records:
        identity = record["reason"].split()[0]
        assert record["identity"] == f"admin (for {identity})" and record["role"] == "admin"
        assert record["peer"].startswith("127.0.0.1:"), record
        assert record["alg"] == "hmac-sha256"
    # The REST trail is the same chain.
    _, _, answer = admin(gateways[1], "GET", "/audit?limit=1000")
    assert [e["hash"] for e in answer["entries"]] == [r["hash"] for r in records]
    # Each replica's own file is a chain of its own, of its own decisions.
    for gateway, identity in zip(gateways, ("alice", "bob"), strict=True):
        own = workdir_of(gateway) / "audit.jsonl"
        checked = switchyard_cli("audit", "verify", str(own), "--key-file", str(key_file))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.startswith(f"{changes_each} records, seq 1..{changes_each}")
        identities = {json.loads(line)["identity"] for line in own.read_text().splitlines()}
        assert identities == {f"admin (for {identity})"}
    # An edit of the export, a line dropped: each caught at its line.
    lines = export.stdout.splitlines()
    edited = json.loads(lines[4])
    edited["reason"] = "nothing to see"
    exported.write_text("\n".join([*lines[:4], json.dumps(edited), *lines[5:]]) + "\n")
    verify = switchyard_cli("audit", "verify", str(exported), "--key-file", str(key_file))
    assert verify.returncode == 1 and verify.stdout.startswith("record at line 5 (seq 5): edited")
    exported.write_text("\n".join([*lines[:4], *lines[5:]]) + "\n")
    verify = switchyard_cli("audit", "verify", str(exported), "--key-file", str(key_file))
    assert verify.returncode == 1
    assert verify.stdout.startswith("record at line 5 (seq 6): missing before it")
