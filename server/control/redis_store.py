"""The shared control store on Redis: every replica reads and writes the same keys.

Keys, all under the configured prefix:
  version               counter, one more for every commit
  endpoints             hash: endpoint -> its record (JSON)
  revisions             hash: endpoint -> the version of its record's last write
  models                hash: model -> its record (JSON), for models loaded or unloaded
                        through the repository API
  model_revisions       hash: model -> the version of its record's last write
  changes               pub/sub channel: the new version after every commit
  audit                 stream of audit records, a hash chain, about audit_max_records kept
  audit_head            "<seq> <hash>" of the chain's last record (server/control/audit_chain.py)
  stats:<key>           hash of counts every replica adds to (a rollout step's window)
  lease                 the replica judging rollouts, set NX with an expiry, renewed
  once:<key>            set NX with an expiry: an audit entry already written

A commit, of an endpoint's record or a model's, is one Lua script (compare the revision,
write, count, audit, publish), so two replicas deciding at once never both win. The audit
record is chained after the head the writer read; the script appends it only if that head
is still the chain's, else the writer reads the head again and rebuilds the record: one
chain, however many replicas write, each decision in it once. Redis must
keep its data across its own restarts (AOF or RDB persistence): a store that comes back
empty returns every replica to the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from switchyard.server.control.audit_chain import ChainHead, seal
from switchyard.server.control.state import (
    AuditEntry,
    ControlSnapshot,
    EndpointRecord,
    ModelRecord,
)
from switchyard.server.control.store import (
    AUDIT_TRAIL_LENGTH,
    STATS_TTL_S,
    ControlStoreError,
)

# Appends of one record: each one lost is another replica's record appended in between.
CHAIN_ATTEMPTS = 32
_HEAD_MOVED = -2

_COMMIT = """
local revision = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if revision ~= tonumber(ARGV[2]) then return -1 end
if (redis.call('GET', KEYS[6]) or '') ~= ARGV[6] then return -2 end
local version = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], version)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('SET', KEYS[6], ARGV[7])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'entry', ARGV[4])
redis.call('PUBLISH', KEYS[5], version)
return version
"""

_HOLD_LEASE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_AUDIT_ONCE = """
if (redis.call('GET', KEYS[3]) or '') ~= ARGV[4] then return -2 end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
redis.call('SET', KEYS[3], ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'entry', ARGV[2])
return 1
"""


class RedisControlStore:
    def __init__(
        self,
        url: str,
        prefix: str,
        timeout_s: float,
        *,
        connection_options: Mapping[str, Any] | None = None,
        audit_key: bytes | None = None,
        audit_max_records: int = AUDIT_TRAIL_LENGTH,
    ) -> None:
        parts = urlsplit(url)
        self._audit_key = audit_key
        self._audit_max_records = audit_max_records
        self.description = f"redis at {parts.hostname}:{parts.port or 6379}{parts.path}"
        self._prefix = prefix
        options: dict[str, Any] = {
            # Password and TLS (ControlSettings.connection()).
            **(connection_options or {}),
            "socket_connect_timeout": timeout_s,
            # One retry, on a fresh connection, for a broken one only: a pooled connection
            # that outlived a Redis restart fails its first use (redis-py 8 hands it out
            # unchecked). Timeouts are not retried: the control plane retries on its own
            # schedule, and a call must stay within timeout_s.
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        }
        self._client = Redis.from_url(url, socket_timeout=timeout_s, **options)
        # Pub/sub waits for messages as long as there are none: no read timeout there.
        self._watch_client = Redis.from_url(url, socket_timeout=None, **options)
        self._commit = self._client.register_script(_COMMIT)
        self._hold_lease = self._client.register_script(_HOLD_LEASE)
        self._audit_once = self._client.register_script(_AUDIT_ONCE)

    def _key(self, name: str) -> str:
        return self._prefix + name

    async def snapshot(self) -> ControlSnapshot:
        async with _store_errors(), self._client.pipeline(transaction=True) as pipe:
            pipe.get(self._key("version"))
            pipe.hgetall(self._key("revisions"))
            pipe.hgetall(self._key("endpoints"))
            pipe.hgetall(self._key("model_revisions"))
            pipe.hgetall(self._key("models"))
            version, revisions, records, model_revisions, models = await pipe.execute()
        endpoints = {
            name.decode(): EndpointRecord.from_json(text, int(revisions.get(name, 0)))
            for name, text in records.items()
        }
        model_records = {
            name.decode(): ModelRecord.from_json(text, int(model_revisions.get(name, 0)))
            for name, text in models.items()
        }
        return ControlSnapshot(int(version or 0), endpoints, model_records)

    async def commit(
        self, endpoint: str, expected_revision: int, record: EndpointRecord, audit: AuditEntry
    ) -> int | None:
        return await self._commit_record(
            ("revisions", "endpoints"), endpoint, expected_revision, record.to_json(), audit
        )

    async def commit_model(
        self, model: str, expected_revision: int, record: ModelRecord, audit: AuditEntry
    ) -> int | None:
        return await self._commit_record(
            ("model_revisions", "models"), model, expected_revision, record.to_json(), audit
        )

    async def _commit_record(
        self,
        hashes: tuple[str, str],
        name: str,
        expected_revision: int,
        record_json: str,
        audit: AuditEntry,
    ) -> int | None:
        revisions, records = hashes
        keys = [
            self._key(k) for k in ("version", revisions, records, "audit", "changes", "audit_head")
        ]
        for _ in range(CHAIN_ATTEMPTS):
            head_text, record, new_head = await self._chained(audit)
            args: list[str | int] = [
                name,
                expected_revision,
                record_json,
                record,
                self._audit_max_records,
                head_text,
                new_head,
            ]
            async with _store_errors():
                version = int(await self._commit(keys=keys, args=args))
            if version != _HEAD_MOVED:
                return version if version >= 0 else None
        raise ControlStoreError(f"the audit chain moved {CHAIN_ATTEMPTS} times during a commit")

    async def _chained(self, audit: AuditEntry) -> tuple[str, str, str]:
        """The chain's head as stored ("" when there is none yet), `audit` sealed after it
        (JSON), and the head that makes."""
        async with _store_errors():
            raw = await self._client.get(self._key("audit_head"))
        head_text = _text(raw) if raw is not None else ""
        record = seal(audit.body(), ChainHead.from_text(head_text), self._audit_key)
        new_head = ChainHead(record["seq"], record["hash"]).to_text()
        return head_text, json.dumps(record, ensure_ascii=False), new_head

    async def add_stats(self, key: str, counts: Mapping[str, int]) -> None:
        name = self._key(f"stats:{key}")
        async with _store_errors(), self._client.pipeline(transaction=True) as pipe:
            for field, count in counts.items():
                pipe.hincrby(name, field, count)
            pipe.pexpire(name, int(STATS_TTL_S * 1000))
            await pipe.execute()

    async def stats(self, key: str) -> dict[str, int]:
        async with _store_errors():
            counts = await self._client.hgetall(self._key(f"stats:{key}"))
        return {_text(field): int(count) for field, count in counts.items()}

    async def hold_lease(self, holder: str, ttl_s: float) -> bool:
        async with _store_errors():
            held = await self._hold_lease(
                keys=[self._key("lease")], args=[holder, int(ttl_s * 1000)]
            )
        return bool(held)

    async def lease_holder(self) -> str | None:
        async with _store_errors():
            holder = await self._client.get(self._key("lease"))
        return _text(holder) if holder is not None else None

    async def audit_once(self, key: str, audit: AuditEntry, ttl_s: float) -> bool:
        keys = [self._key(f"once:{key}"), self._key("audit"), self._key("audit_head")]
        for _ in range(CHAIN_ATTEMPTS):
            head_text, record, new_head = await self._chained(audit)
            args: list[str | int] = [
                int(ttl_s * 1000),
                record,
                self._audit_max_records,
                head_text,
                new_head,
            ]
            async with _store_errors():
                written = int(await self._audit_once(keys=keys, args=args))
            if written != _HEAD_MOVED:
                return bool(written)
        raise ControlStoreError(f"the audit chain moved {CHAIN_ATTEMPTS} times during an append")

    async def audit_trail(self, limit: int) -> list[AuditEntry]:
        if limit <= 0:
            return []
        async with _store_errors():
            entries = await self._client.xrevrange(self._key("audit"), count=limit)
        return [
            AuditEntry.from_json(fields[b"entry"])
            for _, fields in reversed(entries or [])
            if fields is not None
        ]

    async def watch(self, on_change: Callable[[], None]) -> None:
        pubsub = self._watch_client.pubsub(ignore_subscribe_messages=True)
        try:
            async with _store_errors():
                await pubsub.subscribe(self._key("changes"))
                # Whatever changed while nobody listened is read by the resync this starts.
                on_change()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        on_change()
        finally:
            await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await self._client.aclose()
        await self._watch_client.aclose()


def _text(value: bytes | str) -> str:
    # Replies are bytes (decode_responses is off); redis-py types them as either.
    return value.decode() if isinstance(value, bytes) else value


@contextlib.asynccontextmanager
async def _store_errors() -> AsyncIterator[None]:
    """Redis and socket errors as ControlStoreError, the one error the control plane handles."""
    try:
        yield
    except (RedisError, OSError) as error:
        raise ControlStoreError(f"{type(error).__name__}: {error}") from error
