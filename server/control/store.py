"""The control store's interface: the small set of operations routing needs to agree on.

Two backends: memory (one process, the embedded default) and redis (shared by every replica,
kept across restarts). Every operation may raise ControlStoreError when the store cannot be
reached; the control plane then keeps serving the last state it has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from switchyard.server.control.state import (
    AuditEntry,
    ControlSnapshot,
    EndpointRecord,
    ModelRecord,
)

AUDIT_TRAIL_LENGTH = 10_000  # records the shared trail keeps, about (control.audit_max_records)
STATS_TTL_S = 24 * 3600.0  # a step's merged statistics outlive any step interval in use


class ControlStoreError(Exception):
    """The store could not be reached or did not answer in time."""


class ControlStore(Protocol):
    description: str  # for logs: the backend and where it is, no secrets

    async def snapshot(self) -> ControlSnapshot:
        """The version, every endpoint record and every model record, read together."""
        ...

    async def commit(
        self, endpoint: str, expected_revision: int, record: EndpointRecord, audit: AuditEntry
    ) -> int | None:
        """Write `record` if the endpoint's revision is still `expected_revision`, append
        `audit` to the trail, chained after its head, and notify every replica, all at once;
        the new version, or None when another write came first (read again and decide
        again)."""
        ...

    async def commit_model(
        self, model: str, expected_revision: int, record: ModelRecord, audit: AuditEntry
    ) -> int | None:
        """`commit` for a model's record: loaded or unloaded through the repository API."""
        ...

    async def add_stats(self, key: str, counts: Mapping[str, int]) -> None:
        """Add `counts` field by field to the statistics under `key`."""
        ...

    async def stats(self, key: str) -> dict[str, int]:
        """The statistics every replica added under `key`."""
        ...

    async def hold_lease(self, holder: str, ttl_s: float) -> bool:
        """Take the judging lease if nobody holds it, or renew it if `holder` does; whether
        `holder` holds it now. It lapses `ttl_s` after the last renewal."""
        ...

    async def lease_holder(self) -> str | None: ...

    async def audit_once(self, key: str, audit: AuditEntry, ttl_s: float) -> bool:
        """Append `audit` unless an entry under `key` was appended in the last `ttl_s`:
        for a decision every replica sees for itself (a file edit), written once."""
        ...

    async def audit_trail(self, limit: int) -> list[AuditEntry]:
        """The newest `limit` records, oldest first, each with its place in the chain."""
        ...

    async def watch(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` after every commit, from any replica; returns never, raises
        ControlStoreError when the connection is lost."""
        ...

    async def close(self) -> None: ...
