"""Writes a feature file (CSV or Parquet) into Redis, in the layout the online store reads.

Each row becomes `HSET <key> <field> <text> ...` of its entity's key (config.py), plus
`EXPIRE <key> <ttl_s>` when a TTL is asked for, sent in pipelined batches without
MULTI. A row replaces the values of the file's columns; fields the file has no column
for are left as they are; an empty cell deletes its field (HDEL), so its default applies.
The file is checked batch by batch, so an error stops the load before its batch is
written; the message says how many rows were written before it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from switchyard.runtimes.errors import InvalidArgument, Unavailable
from switchyard.server.features.definitions import EntitySpec
from switchyard.server.features.files import FeatureFileError, count_rows, read_batches
from switchyard.server.features.redis_store import redacted_url

PROGRESS_INTERVAL_S = 0.2


def load_file(
    path: Path,
    entity: EntitySpec,
    redis_url: str,
    *,
    ttl_s: int | None = None,
    batch_size_rows: int = 1000,
    progress: TextIO | None = sys.stderr,
    timeout_s: float = 10.0,
    connection_options: Mapping[str, Any] | None = None,
) -> int:
    """Write the rows of path into Redis; returns the number of rows written.

    Raises FeatureFileError (InvalidArgument) for a bad file, naming row and column, and
    Unavailable when Redis cannot be written. progress: where a progress line goes (None:
    nowhere).
    """
    if ttl_s is not None and ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    try:
        # Password and TLS of the config's store (RedisStoreConfig.connection()).
        client = redis.Redis.from_url(
            redis_url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            **(connection_options or {}),
        )
    except ValueError as exc:
        raise InvalidArgument(f"invalid Redis URL {redacted_url(redis_url)!r}: {exc}") from None
    meter = _Progress(progress, f"{path.name} -> {entity.name}", count_rows(path))
    written = 0
    try:
        for batch in read_batches(path, entity, batch_size_rows):
            names = [entity.fields[i].name for i in batch.field_indexes]
            pipeline = client.pipeline(transaction=False)
            for entity_id, texts in zip(batch.ids, batch.texts, strict=True):
                key = entity.key(entity_id)
                cells = list(zip(names, texts, strict=True))
                values: dict[FieldT, EncodableT] = {
                    name: text for name, text in cells if text is not None
                }
                absent = [name for name, text in cells if text is None]
                if values:
                    pipeline.hset(key, mapping=values)
                    if ttl_s is not None:
                        pipeline.expire(key, ttl_s)
                if absent:
                    pipeline.hdel(key, *absent)
            pipeline.execute()
            written += len(batch.ids)
            meter.update(written)
    except FeatureFileError as exc:
        if written:
            raise FeatureFileError(f"{exc} ({written} rows before it were written)") from None
        raise
    except RedisError as exc:
        raise Unavailable(
            f"cannot write to Redis at {redacted_url(redis_url)}: {exc} "
            f"({written} rows were written)"
        ) from None
    finally:
        client.close()
    meter.finish(written)
    return written


class _Progress:
    """One status line: redrawn in place on a terminal, written once at the end otherwise."""

    def __init__(self, stream: TextIO | None, label: str, total_rows: int | None) -> None:
        self._stream = stream
        self._label = label
        self._total_rows = total_rows
        self._started_s = time.monotonic()
        self._drawn_s = 0.0
        self._live = stream is not None and stream.isatty()

    def update(self, rows: int) -> None:
        now_s = time.monotonic()
        if self._live and now_s - self._drawn_s >= PROGRESS_INTERVAL_S:
            self._drawn_s = now_s
            self._write(f"\r{self._line(rows, now_s)}")

    def finish(self, rows: int) -> None:
        if self._stream is not None:
            prefix = "\r" if self._live else ""
            self._write(f"{prefix}{self._line(rows, time.monotonic())}\n")

    def _line(self, rows: int, now_s: float) -> str:
        elapsed_s = max(now_s - self._started_s, 1e-9)
        of_total = f"/{self._total_rows}" if self._total_rows is not None else ""
        return f"{self._label}: {rows}{of_total} rows ({rows / elapsed_s:,.0f} rows/s)"

    def _write(self, text: str) -> None:
        assert self._stream is not None
        self._stream.write(text)
        self._stream.flush()
