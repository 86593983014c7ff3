"""The embedded control store: routing state held in this process, as the gateway had it.

One process only, and gone with it: a restart returns to the config file. Use the redis
store for several replicas or for state that outlives a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping

from switchyard.server.control.audit_chain import ChainHead, seal
from switchyard.server.control.state import (
    AuditEntry,
    ControlSnapshot,
    EndpointRecord,
    ModelRecord,
)
from switchyard.server.control.store import AUDIT_TRAIL_LENGTH


class MemoryControlStore:
    description = "memory (this process only)"

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        audit_key: bytes | None = None,
        audit_max_records: int = AUDIT_TRAIL_LENGTH,
    ) -> None:
        self._clock = clock
        self._audit_key = audit_key
        self._head = ChainHead()
        self._version = 0
        self._records: dict[str, EndpointRecord] = {}
        self._models: dict[str, ModelRecord] = {}
        self._stats: dict[str, Counter[str]] = {}
        self._trail: deque[AuditEntry] = deque(maxlen=audit_max_records)
        self._once_until_s: dict[str, float] = {}
        self._watchers: list[Callable[[], None]] = []
        self._holder: str | None = None

    async def snapshot(self) -> ControlSnapshot:
        return ControlSnapshot(self._version, dict(self._records), dict(self._models))

    async def commit(
        self, endpoint: str, expected_revision: int, record: EndpointRecord, audit: AuditEntry
    ) -> int | None:
        current = self._records.get(endpoint)
        if (current.revision if current else 0) != expected_revision:
            return None
        self._version += 1
        self._records[endpoint] = EndpointRecord(
            record.base_fingerprint, record.override, record.rollout, self._version
        )
        self._published(audit)
        return self._version

    async def commit_model(
        self, model: str, expected_revision: int, record: ModelRecord, audit: AuditEntry
    ) -> int | None:
        current = self._models.get(model)
        if (current.revision if current else 0) != expected_revision:
            return None
        self._version += 1
        self._models[model] = record.with_revision(self._version)
        self._published(audit)
        return self._version

    def _append(self, audit: AuditEntry) -> None:
        """Chain `audit` after the head (no await in between: nothing else can append)."""
        record = seal(audit.body(), self._head, self._audit_key)
        self._head = ChainHead(record["seq"], record["hash"])
        self._trail.append(AuditEntry.from_document(record))

    def _published(self, audit: AuditEntry) -> None:
        self._append(audit)
        for on_change in list(self._watchers):
            on_change()

    async def add_stats(self, key: str, counts: Mapping[str, int]) -> None:
        self._stats.setdefault(key, Counter()).update(counts)

    async def stats(self, key: str) -> dict[str, int]:
        return dict(self._stats.get(key, {}))

    async def hold_lease(self, holder: str, ttl_s: float) -> bool:
        self._holder = holder  # the only replica there is
        return True

    async def lease_holder(self) -> str | None:
        return self._holder

    async def audit_once(self, key: str, audit: AuditEntry, ttl_s: float) -> bool:
        now_s = self._clock()
        if self._once_until_s.get(key, 0.0) > now_s:
            return False
        self._once_until_s[key] = now_s + ttl_s
        self._append(audit)
        return True

    async def audit_trail(self, limit: int) -> list[AuditEntry]:
        return list(self._trail)[-limit:] if limit > 0 else []

    async def watch(self, on_change: Callable[[], None]) -> None:
        self._watchers.append(on_change)
        try:
            await asyncio.Future()  # until cancelled
        finally:
            self._watchers.remove(on_change)

    async def close(self) -> None:
        self._stats.clear()
