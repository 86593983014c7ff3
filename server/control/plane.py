"""The control plane of one replica: keeps its routing table in step with the shared store.

The table in force is the config file's base with the store's overrides laid on it
(server/control/state.py). This replica:
  - installs every change any replica commits, within a second: the store's notification
    wakes the sync loop, which also resyncs every `resync_s` in case one was lost;
  - commits the changes it is asked for (the admin API, on any replica) with a
    compare-and-set on the endpoint's revision, auditing each once, by the replica that made
    it;
  - counts rollout traffic per step and variant in mergeable histograms and adds them to the
    store every tick; the one replica holding the lease judges every running rollout on the
    merged numbers and commits the step it decides;
  - keeps serving the last table it had while the store cannot be reached (it says so in a
    metric and the log) and resyncs when it returns. No request waits on the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from switchyard.router.audit import describe_changes
from switchyard.router.latency_histogram import LatencyHistogram
from switchyard.router.quality import QualityCounts
from switchyard.router.rollout import (
    IDLE,
    Rollout,
    RolloutEvent,
    RolloutState,
    RolloutStatus,
    stable_variant,
)
from switchyard.router.rollout_plan import RolloutPlan
from switchyard.router.router import Router
from switchyard.router.table import RoutingTable
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument, NotFound, Unavailable
from switchyard.server.audit_log import AuditLog
from switchyard.server.caller import Actor
from switchyard.server.config_sections import ControlSettings
from switchyard.server.control.state import (
    AuditEntry,
    ControlSnapshot,
    EndpointRecord,
    ModelRecord,
    Override,
    applies,
    base_fingerprint,
    table_in_force,
    utc_text,
)
from switchyard.server.control.store import ControlStore, ControlStoreError
from switchyard.server.event_wait import wait_for_event
from switchyard.server.metrics import RoutingMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")
ROLLOUT_ACTIONS = ("start", "abort", "promote")
# Compare-and-set attempts of one change. An attempt lost is another writer's commit, so
# this many concurrent writers of one endpoint all land; more may be answered "retry".
COMMIT_ATTEMPTS = 3
FILE_AUDIT_DEDUP_S = 60.0  # every replica applies a file edit; one audits it
# The gateway's own decisions: no peer; the record's replica names the one that made it.
ROLLOUT_ACTOR = Actor("rollout", role="gateway")
FILE_ACTOR = Actor("config-file", role="gateway")

# A running rollout as this replica counts it: the record revision that began its step.
_Running = tuple[int, RolloutPlan]


class ControlPlane:
    def __init__(
        self,
        base: RoutingTable,
        router: Router,
        store: ControlStore,
        settings: ControlSettings,
        *,
        tick_s: float,
        metrics: RoutingMetrics,
        audit: AuditLog,
        replica: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.replica = replica
        self.store = store
        self._router = router
        self._settings = settings
        self._tick_s = tick_s
        self._metrics = metrics
        self._audit = audit
        self._clock = clock
        self._base = base
        self._snapshot = ControlSnapshot()
        self._running: dict[str, _Running] = {}
        self._pending: dict[tuple[str, int, str], LatencyHistogram] = {}
        self._pending_quality: dict[tuple[str, int, str], QualityCounts] = {}
        self._check_base = True  # after loading a base, void records get reset once
        self._store_up = True
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._on_models: Callable[[Mapping[str, ModelRecord]], None] | None = None
        metrics.store_up.set(1)
        self._install(self._snapshot)

    # Reading ---------------------------------------------------------------------------

    @property
    def table(self) -> RoutingTable:
        return self._router.table

    @property
    def version(self) -> int:
        return self._snapshot.version

    @property
    def store_up(self) -> bool:
        return self._store_up

    @property
    def models(self) -> Mapping[str, ModelRecord]:
        """Models loaded or unloaded through the repository API, as the store has them."""
        return self._snapshot.models

    def on_models_changed(self, callback: Callable[[Mapping[str, ModelRecord]], None]) -> None:
        """Call `callback` with the model records whenever a sync brings other ones."""
        self._on_models = callback

    def overrides(self) -> dict[str, dict[str, Any]]:
        """The overrides in force, by endpoint, with who set them and when."""
        return {
            name: {
                "weights": dict(record.override.weights),
                "actor": record.override.actor,
                "reason": record.override.reason,
                "time": utc_text(record.override.time_s),
            }
            for name, record in self._applying_records().items()
            if record.override is not None
        }

    def rollout_states(self) -> dict[str, dict[str, object]]:
        return {
            name: {
                "state": str(status.state),
                "canary_percent": status.canary_percent,
                "step": status.step,
                "stable": stable_variant(plan, status),
                "canary": plan.canary,
            }
            for name, plan, status in self._rollout_statuses()
        }

    async def lease_holder(self) -> str | None:
        return await _confirmed(self._call("lease", self.store.lease_holder()))

    async def audit_trail(self, limit: int) -> list[AuditEntry]:
        return await _confirmed(self._call("audit", self.store.audit_trail(limit)))

    # The serving path ------------------------------------------------------------------

    def record(self, endpoint: str, variant: str, latency_s: float, ok: bool) -> None:
        """One request an endpoint's variant served; counted if a rollout judges it."""
        key = self._rollout_key(endpoint, variant)
        if key is None:
            return
        histogram = self._pending.get(key)
        if histogram is None:
            histogram = self._pending[key] = LatencyHistogram()
        histogram.record(latency_s, ok)

    def record_quality(
        self, endpoint: str, variant: str, version: str, quality: QualityCounts
    ) -> None:
        """Joined feedback of a request an endpoint's variant served with `version`; counted
        for the step running when the feedback arrives (a step outlasts the clicks of its
        requests), unless the variant now names another version: late feedback of an earlier
        rollout's canary must not judge a new one of the same name."""
        key = self._rollout_key(endpoint, variant)
        if key is None:
            return
        spec = self._base.endpoints.get(endpoint)
        target = spec.variants.get(variant) if spec is not None else None
        if target is not None and target.version is not None and target.version != version:
            return
        pending = self._pending_quality.get(key)
        if pending is None:
            pending = self._pending_quality[key] = QualityCounts()
        pending.merge(quality)

    def _rollout_key(self, endpoint: str, variant: str) -> tuple[str, int, str] | None:
        running = self._running.get(endpoint)
        if running is None:
            return None
        revision, plan = running
        if variant == plan.canary:
            return (endpoint, revision, "canary")
        if variant == plan.stable:
            return (endpoint, revision, "stable")
        return None

    # Changes ---------------------------------------------------------------------------

    async def set_weights(self, endpoint: str, weights: dict[str, Any], actor: Actor) -> list[str]:
        spec = self._base.with_weights(endpoint, weights).endpoint(endpoint)  # validates

        def change(current: EndpointRecord) -> tuple[EndpointRecord, str]:
            if current.rollout.state is RolloutState.RUNNING:
                raise InvalidArgument(
                    f"endpoint '{endpoint}' is under a running rollout, which owns its "
                    "weights; abort or promote the rollout first"
                )
            reason = actor.reason or "set weights"
            override = Override(dict(spec.weights), actor.identity, reason, self._clock())
            return _replace(current, override=override), "set weights"

        return await self._commit(endpoint, actor, change)

    async def reset(self, endpoint: str, actor: Actor) -> list[str]:
        """Back to the file's weights: the override and the rollout's state are dropped."""

        def change(current: EndpointRecord) -> tuple[EndpointRecord, str]:
            if current.rollout.state is RolloutState.RUNNING:
                raise InvalidArgument(
                    f"endpoint '{endpoint}' is under a running rollout; abort it first"
                )
            return EndpointRecord(current.base_fingerprint), "reset to the config file"

        return await self._commit(endpoint, actor, change)

    async def rollout_action(self, endpoint: str, action: str, actor: Actor) -> RolloutStatus:
        if action not in ROLLOUT_ACTIONS:
            raise NotFound(
                f"unknown rollout action '{client_text(action)}' (actions: {ROLLOUT_ACTIONS})"
            )
        rollout = self._rollout(endpoint)
        events: list[RolloutEvent] = []

        def change(current: EndpointRecord) -> tuple[EndpointRecord, str]:
            now_s, reason = self._clock(), f"{action} by {actor.identity}"
            if action == "start":
                event = rollout.start(current.rollout, now_s)
            elif action == "abort":
                event = rollout.abort(current.rollout, now_s, reason)
            else:
                event = rollout.promote(current.rollout, now_s, reason)
            events.append(event)
            return _rollout_record(current, event, actor.identity, now_s)

        await self._commit(endpoint, actor, change)
        self._count_event(events[-1])
        return events[-1].after

    async def load_base(self, base: RoutingTable, reason: str) -> list[str]:
        """Serve a new base from the config file; returns its changes to the old base.

        An edit that leaves an endpoint's variants, weights and plan alone leaves its
        override and rollout in force; one that changes them resets that endpoint's record
        (at the next sync, with a compare-and-set: one replica does it and audits it).
        """
        changes = describe_changes(self._base, base)
        if not changes:
            return []
        self._base = base
        self._install(self._snapshot)
        self._check_base = True
        self._changed.set()
        self._metrics.table_changes.labels("config-file").inc()
        await self.audit_file_change(reason, changes)
        return changes

    async def audit_file_change(self, reason: str, changes: list[str]) -> None:
        """Audit a change every replica makes for itself from the files it reads (a config
        edit, a polled model repository): written once to the shared trail."""
        entry = self._entry(FILE_ACTOR, reason, changes)
        key = hashlib.sha256("\n".join(changes).encode()).hexdigest()[:24]
        try:
            first = await self._call("audit", self.store.audit_once(key, entry, FILE_AUDIT_DEDUP_S))
        except ControlStoreError:
            first = True  # the shared trail misses it; this replica's own log must not
        if first:
            self._audit.write(entry)

    async def commit_model(self, model: str, record: ModelRecord, action: str, actor: Actor) -> int:
        """Write a model's record for every replica, audited; the store's new revision. A
        compare-and-set on the record's revision, retried on a lost race: the latest request
        for a model wins, as with a single server."""
        entry = self._entry(actor, action, [f"model {model}: {action}"])
        for _ in range(COMMIT_ATTEMPTS):
            await _confirmed(self._resync())
            current = self._snapshot.models.get(model)
            expected = current.revision if current is not None else 0
            committed = self.store.commit_model(model, expected, record, entry)
            version = await _confirmed(self._call("commit", committed))
            if version is not None:
                self._audit.write(entry)
                await _confirmed(self._resync())
                return version
        raise Unavailable(
            f"model '{model}' was changed by other replicas {COMMIT_ATTEMPTS} times while this "
            "change was made; retry it"
        )

    # Lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the shared state (serving the file's if the store does not answer), then
        keep in step with it."""
        with contextlib.suppress(ControlStoreError):
            await self._resync()
        self._tasks = [
            asyncio.create_task(self._forever(self._sync_once), name="control-sync"),
            asyncio.create_task(self._forever(self._watch_once), name="control-watch"),
            asyncio.create_task(self._forever(self._tick_once), name="control-tick"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(ControlStoreError):
            await self._flush_stats()  # this replica's last counts still judge the step
        await self.store.close()

    # Inside ----------------------------------------------------------------------------

    def _install(self, snapshot: ControlSnapshot) -> None:
        """Serve the table `snapshot` makes on the current base (one assignment)."""
        previous, self._snapshot = self._snapshot, snapshot
        self._router.swap(table_in_force(self._base, snapshot))
        if self._on_models is not None and snapshot.models != previous.models:
            self._on_models(snapshot.models)
        records = self._applying_records()
        self._running = {
            name: (record.revision, plan)
            for name, record in records.items()
            if record.rollout.state is RolloutState.RUNNING
            and (plan := self._base.endpoints[name].rollout) is not None
        }
        metrics = self._metrics
        metrics.table_version.set(snapshot.version)
        for name in self._base.endpoints:
            record = records.get(name)
            metrics.override_in_force.labels(name).set(
                int(record is not None and record.override is not None)
            )
        for name, _, status in self._rollout_statuses():
            metrics.rollout_canary_percent.labels(name).set(status.canary_percent)

    def _applying_records(self) -> dict[str, EndpointRecord]:
        """The store's records that apply to this replica's base."""
        return {
            name: record
            for name, record in self._snapshot.endpoints.items()
            if (spec := self._base.endpoints.get(name)) is not None and applies(record, spec)
        }

    def _rollout_statuses(self) -> list[tuple[str, RolloutPlan, RolloutStatus]]:
        records = self._applying_records()
        return [
            (name, spec.rollout, record.rollout if (record := records.get(name)) else IDLE)
            for name, spec in self._base.endpoints.items()
            if spec.rollout is not None
        ]

    def _rollout(self, endpoint: str) -> Rollout:
        plan = self._base.endpoint(endpoint).rollout  # NotFound for unknown endpoints
        if plan is None:
            raise NotFound(f"endpoint '{endpoint}' has no rollout plan in its configuration")
        return Rollout(endpoint, plan)

    def _current(self, endpoint: str) -> EndpointRecord:
        """The endpoint's record to change: the store's, or a fresh one on this base (at the
        store's revision, so a void record is replaced, not merged)."""
        spec = self._base.endpoint(endpoint)
        record = self._snapshot.endpoints.get(endpoint)
        if record is not None and applies(record, spec):
            return record
        revision = record.revision if record is not None else 0
        return EndpointRecord(base_fingerprint(spec), revision=revision)

    async def _commit(
        self,
        endpoint: str,
        actor: Actor,
        change: Callable[[EndpointRecord], tuple[EndpointRecord, str]],
    ) -> list[str]:
        """Apply `change` to the endpoint's latest record with a compare-and-set, audit it
        and install it here; other replicas install it on the store's notification."""
        for _ in range(COMMIT_ATTEMPTS):
            await _confirmed(self._resync())
            current = self._current(endpoint)
            record, action = change(current)
            changes = self._changes_if(endpoint, record)
            entry = self._entry(actor, action, changes)
            committed = self.store.commit(endpoint, current.revision, record, entry)
            if await _confirmed(self._call("commit", committed)) is not None:
                self._audit.write(entry)
                self._metrics.table_changes.labels(actor.identity).inc()
                await _confirmed(self._resync())
                return changes
        raise Unavailable(
            f"endpoint '{endpoint}' was changed by other replicas {COMMIT_ATTEMPTS} times "
            "while this change was made; nothing was changed, retry it"
        )

    def _entry(self, actor: Actor, action: str, changes: list[str]) -> AuditEntry:
        """The audit record of a decision this replica makes (chained where appended)."""
        return AuditEntry(
            actor.identity,
            action,
            tuple(changes),
            self.replica,
            role=actor.role,
            peer=actor.peer,
            reason=actor.reason,
        )

    def _changes_if(self, endpoint: str, record: EndpointRecord) -> list[str]:
        """The table lines `record` would change on this replica, for the audit trail."""
        after = ControlSnapshot(
            self._snapshot.version, {**self._snapshot.endpoints, endpoint: record}
        )
        return describe_changes(self.table, table_in_force(self._base, after))

    async def _resync(self) -> None:
        self._install(await self._call("snapshot", self.store.snapshot()))
        if self._check_base:
            await self._reset_void_records()
            self._check_base = False  # not before: a store error retries it next sync

    async def _reset_void_records(self) -> None:
        """Records laid on another base than this replica's file: the file changed those
        endpoints' variants, weights or plan, so their overrides and rollouts end."""
        attempted = False
        for name, record in list(self._snapshot.endpoints.items()):
            spec = self._base.endpoints.get(name)
            if spec is None or applies(record, spec):
                continue
            if record.override is None and record.rollout.state is RolloutState.IDLE:
                continue
            fresh = EndpointRecord(base_fingerprint(spec))
            action = "reset: the config file changed the endpoint's variants, weights or plan"
            changes = self._changes_if(name, fresh)
            entry = self._entry(FILE_ACTOR, action, changes)
            attempted = True  # won or lost to another replica: either way, read again
            if await self._call("commit", self.store.commit(name, record.revision, fresh, entry)):
                self._audit.write(entry)
        if attempted:
            self._install(await self._call("snapshot", self.store.snapshot()))

    async def _sync_once(self) -> None:
        await wait_for_event(self._changed, self._settings.resync_s)
        self._changed.clear()
        with contextlib.suppress(ControlStoreError):
            await self._resync()

    async def _watch_once(self) -> None:
        try:
            await self._call("watch", self.store.watch(self._changed.set))
        except ControlStoreError:
            await asyncio.sleep(self._settings.resync_s)  # and subscribe again

    async def _tick_once(self) -> None:
        await asyncio.sleep(self._tick_s)
        try:
            await self._flush_stats()
            lease = self.store.hold_lease(self.replica, self._settings.lease_ttl_s)
            held = await self._call("lease", lease)
            self._metrics.lease_held.labels(self.replica).set(int(held))
            if held:
                await self._judge_rollouts()
        except ControlStoreError:
            self._metrics.lease_held.labels(self.replica).set(0)

    async def _flush_stats(self) -> None:
        """Add this replica's counts since the last flush to the store's. Counts that could
        not be written are kept for the next flush while their step runs."""
        pending, self._pending = self._pending, {}
        error: ControlStoreError | None = None
        for key, histogram in pending.items():
            if error is None:
                try:
                    await self._call(
                        "stats", self.store.add_stats(_stats_key(*key), histogram.counts())
                    )
                    continue
                except ControlStoreError as exc:
                    error = exc
            endpoint, revision, _ = key
            if self._running.get(endpoint, (None,))[0] == revision:
                self._pending.setdefault(key, LatencyHistogram()).merge(histogram)
        quality, self._pending_quality = self._pending_quality, {}
        for key, counts in quality.items():
            if error is None:
                try:
                    stats_key = _quality_key(*key)
                    await self._call("stats", self.store.add_stats(stats_key, counts.counts()))
                    continue
                except ControlStoreError as exc:
                    error = exc
            endpoint, revision, _ = key
            if self._running.get(endpoint, (None,))[0] == revision:
                self._pending_quality.setdefault(key, QualityCounts()).merge(counts)
        if error is not None:
            raise error

    async def _judge_rollouts(self) -> None:
        now_s = self._clock()
        for endpoint, (revision, plan) in list(self._running.items()):
            record = self._snapshot.endpoints[endpoint]
            merged = []
            for role in ("canary", "stable"):
                key = _stats_key(endpoint, revision, role)
                merged.append(
                    LatencyHistogram.from_counts(await self._call("stats", self.store.stats(key)))
                )
            canary, stable = merged
            qualities: list[QualityCounts | None] = [None, None]
            if plan.checks_quality:
                qualities = [
                    QualityCounts.from_counts(
                        await self._call(
                            "stats", self.store.stats(_quality_key(endpoint, revision, role))
                        )
                    )
                    for role in ("canary", "stable")
                ]
            event = Rollout(endpoint, plan).judge(
                record.rollout, canary, stable, now_s, qualities[0], qualities[1]
            )
            if event is None:
                continue
            new_record, action = _rollout_record(record, event, "rollout", now_s)
            changes = self._changes_if(endpoint, new_record)
            entry = self._entry(ROLLOUT_ACTOR, action, changes)
            committed = self.store.commit(endpoint, record.revision, new_record, entry)
            if await self._call("commit", committed) is not None:
                self._audit.write(entry)
                self._metrics.table_changes.labels("rollout").inc()
                self._count_event(event)
                await self._resync()

    def _count_event(self, event: RolloutEvent) -> None:
        before, after = event.before, event.after
        log.info(
            "rollout of %s: %s -> %s, canary %s%% -> %s%% (%s)",
            event.endpoint, before.state, after.state,
            before.canary_percent, after.canary_percent, event.reason,
        )  # fmt: skip
        self._metrics.rollout_events.labels(event.endpoint, str(after.state)).inc()

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        """A store call; its failure is counted and logged once per outage, then raised."""
        try:
            result = await call
        except ControlStoreError as exc:
            self._metrics.store_errors.labels(operation).inc()
            if self._store_up:
                self._store_up = False
                self._metrics.store_up.set(0)
                log.warning(
                    "control store %s unreachable (%s): serving the last state, version %d",
                    self.store.description, exc, self._snapshot.version,
                )  # fmt: skip
            raise
        if not self._store_up:
            self._store_up = True
            self._metrics.store_up.set(1)
            log.info("control store %s reachable again: resyncing", self.store.description)
            self._changed.set()
        return result

    async def _forever(self, step: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.current_task()
        while True:
            try:
                await step()
            except Exception:  # a broken step must not end the loop: the next one may work
                log.exception("control plane step %s failed", step.__name__)
                await asyncio.sleep(self._tick_s)
            # A store call cancelled as it fails (its read timeout, a closed connection) can
            # come back as that error: the step takes it for an outage and returns, while the
            # cancellation stays pending and close() waits for this loop to end.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError


async def _confirmed(call: Awaitable[T]) -> T:
    """A store call made for a caller (the admin API): an outage is its 503."""
    try:
        return await call
    except ControlStoreError as exc:
        raise Unavailable(
            f"the control store cannot be reached ({exc}); the change was not confirmed: "
            "check GET /admin/v1/endpoints and retry"
        ) from None


def _replace(record: EndpointRecord, *, override: Override | None) -> EndpointRecord:
    return EndpointRecord(record.base_fingerprint, override, record.rollout, record.revision)


def _rollout_record(
    current: EndpointRecord, event: RolloutEvent, actor: str, now_s: float
) -> tuple[EndpointRecord, str]:
    action = f"rollout {event.after.state}: {event.reason}"
    override = Override(event.weights, actor, action, now_s)
    return EndpointRecord(current.base_fingerprint, override, event.after), action


def _stats_key(endpoint: str, revision: int, role: str) -> str:
    return f"{endpoint}:{revision}:{role}"


def _quality_key(endpoint: str, revision: int, role: str) -> str:
    """Joined-feedback counts of the same step and role, next to its latency stats."""
    return f"{endpoint}:{revision}:{role}:quality"
