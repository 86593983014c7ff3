"""The prediction log: Recommend responses kept under their request id for feedback to join.

Two backends, chosen by `control.store`:
  memory  this process's own, bounded by `feedback.max_predictions` (oldest dropped).
  redis   the control store's Redis, shared by every replica: feedback for a response one
          replica served may be posted to any other. One key per request id,
          `<control.prefix>pred:<id>`, a compact JSON record, with an expiry; a second key,
          `<prefix>pred_joined:<id>`, set NX by the replica that joins it, so a duplicate
          feedback is joined once across replicas.

Either way a prediction is kept `feedback.ttl_s` for joining and `late_window_s` more, so
feedback that comes after the ttl is counted late, not unknown. Redis writes never run on
the request path: `put` appends to a bounded queue that a background task writes, one
call per batch (a script); a full queue drops the prediction and counts it. Recommend
never waits for, nor fails because of, the prediction log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from switchyard.runtimes.errors import Unavailable
from switchyard.server.config_sections import ControlSettings, FeedbackSettings

log = logging.getLogger(__name__)

# A Redis write batch: flushed when this many are queued, else this long after the first.
FLUSH_BATCH = 256
FLUSH_INTERVAL_S = 0.01
# Expired predictions dropped per `put` at most (memory): a bounded cost per request.
EXPIRE_PER_PUT = 8


@dataclass(frozen=True, slots=True)
class ScoredItem:
    """One item of a Recommend response, as it was shown and as a prediction keeps it."""

    item_id: str
    score: float


@dataclass(slots=True)
class Prediction:
    endpoint: str
    variant: str
    version: str
    # The response's own item list, best first: kept as it is, not copied (request path).
    items: Sequence[ScoredItem]
    k: int  # the k the caller asked for (0: every candidate)
    time_s: float
    joined: bool = False  # memory store only; Redis marks it in its own key


class PredictionStoreUnavailable(Unavailable):
    """The shared prediction store cannot be read: feedback is answered 503 (retry)."""


def late_window_s(settings: FeedbackSettings) -> float:
    """How long past its ttl a prediction stays, to tell late feedback from unknown ids:
    the ttl itself, at most 5 minutes (each second of it costs a second of predictions)."""
    return min(settings.ttl_s, 300.0)


def encode_prediction(prediction: Prediction) -> bytes:
    """[endpoint, variant, version, k, time_s, [item ids], [scores]]: a JSON array (no key
    names), about 20 bytes an item; scores as Python floats (JSON round-trips them)."""
    items = prediction.items
    return json.dumps(
        [
            prediction.endpoint,
            prediction.variant,
            prediction.version,
            prediction.k,
            prediction.time_s,
            [item.item_id for item in items],
            [float(item.score) for item in items],
        ],
        separators=(",", ":"),
    ).encode()


def decode_prediction(raw: bytes | str) -> Prediction:
    """ValueError for a record that is not one of encode_prediction's."""
    try:
        endpoint, variant, version, k, time_s, ids, scores = json.loads(raw)
        if not isinstance(ids, list) or not isinstance(scores, list) or len(ids) != len(scores):
            raise ValueError("item ids and scores differ in length")
        items = [ScoredItem(str(i), float(s)) for i, s in zip(ids, scores, strict=True)]
        time_s = float(time_s)
        if not math.isfinite(time_s):
            raise ValueError("time is not finite")
        return Prediction(str(endpoint), str(variant), str(version), items, int(k), time_s)
    except (TypeError, ValueError) as exc:  # JSONDecodeError, unpacking, float("x")
        raise ValueError(f"not a prediction record: {exc}") from None


@dataclass(slots=True)
class PredictionStats:
    """Plain counts the request path adds to; exported at scrape time (FeedbackCollector)."""

    kept: int = 0  # memory store: predictions held now
    pending: int = 0  # redis store: predictions queued for writing now
    dropped_capacity: int = 0
    dropped_ttl: int = 0
    dropped_queue_full: int = 0
    dropped_write_failed: int = 0


class PredictionStore(Protocol):
    stats: PredictionStats
    description: str

    def put(self, request_id: str, prediction: Prediction) -> None:
        """Keep one prediction: O(1), no I/O, never raises (on the request path)."""

    async def get(self, request_id: str) -> Prediction | None:
        """The prediction, or None when unknown or gone; PredictionStoreUnavailable."""

    async def mark_joined(self, request_id: str, prediction: Prediction) -> bool:
        """Mark it joined; False when it already was (by this replica or another)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class MemoryPredictionStore:
    def __init__(self, settings: FeedbackSettings) -> None:
        self.stats = PredictionStats()
        self.description = "memory"
        self._max = settings.max_predictions
        self._keep_s = settings.ttl_s + late_window_s(settings)
        self._predictions: OrderedDict[str, Prediction] = OrderedDict()

    def put(self, request_id: str, prediction: Prediction) -> None:
        predictions = self._predictions
        if request_id in predictions:
            del predictions[request_id]  # a reused id: the newest response is the one shown
        predictions[request_id] = prediction
        stats = self.stats
        if len(predictions) > self._max:
            _, dropped = predictions.popitem(last=False)
            if not dropped.joined:
                stats.dropped_capacity += 1
        # In time order, so only the head can have expired; a few per call bounds the cost.
        oldest_s = prediction.time_s - self._keep_s
        for _ in range(EXPIRE_PER_PUT):
            first = next(iter(predictions.values()))
            if first.time_s >= oldest_s:
                break
            predictions.popitem(last=False)
            if not first.joined:
                stats.dropped_ttl += 1
        stats.kept = len(predictions)

    async def get(self, request_id: str) -> Prediction | None:
        return self._predictions.get(request_id)

    async def mark_joined(self, request_id: str, prediction: Prediction) -> bool:
        if prediction.joined:
            return False
        prediction.joined = True
        return True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


# One call writes a batch: a script with every key and value costs the client a third of
# the CPU of a pipeline of SETs (redis-py packs and parses each pipelined command).
_WRITE_BATCH = """
local keep_ms = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'PX', keep_ms)
end
return #KEYS
"""


class RedisPredictionStore:
    def __init__(
        self,
        url: str,
        prefix: str,
        timeout_s: float,
        settings: FeedbackSettings,
        *,
        connection_options: dict[str, Any] | None = None,
        description: str = "redis",
    ) -> None:
        self.stats = PredictionStats()
        self.description = description
        self._prefix = prefix
        self._keep_ms = max(1, round((settings.ttl_s + late_window_s(settings)) * 1000))
        self._max_pending = settings.redis_queue_max
        self._queue: deque[tuple[str, Prediction]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._client = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # A pooled connection that outlived a Redis restart fails its first use: one
            # retry on a fresh connection, for broken connections only (not timeouts).
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            **(connection_options or {}),
        )

        self._write = self._client.register_script(_WRITE_BATCH)

    def key(self, request_id: str) -> str:
        return f"{self._prefix}pred:{request_id}"

    def joined_key(self, request_id: str) -> str:
        return f"{self._prefix}pred_joined:{request_id}"

    def put(self, request_id: str, prediction: Prediction) -> None:
        queue = self._queue
        if len(queue) >= self._max_pending:
            self.stats.dropped_queue_full += 1
            return
        queue.append((request_id, prediction))
        if not self._wake.is_set():
            self._wake.set()

    async def get(self, request_id: str) -> Prediction | None:
        try:
            raw = await self._client.get(self.key(request_id))
        except RedisError as exc:
            raise self._unavailable(exc) from None
        if raw is None:
            return None
        try:
            return decode_prediction(raw)
        except ValueError as exc:
            log.warning("prediction %r in %s is unreadable: %s", request_id, self.description, exc)
            return None

    async def mark_joined(self, request_id: str, prediction: Prediction) -> bool:
        try:
            marked = await self._client.set(
                self.joined_key(request_id), b"1", nx=True, px=self._keep_ms
            )
        except RedisError as exc:
            raise self._unavailable(exc) from None
        return bool(marked)

    def _unavailable(self, exc: RedisError) -> PredictionStoreUnavailable:
        return PredictionStoreUnavailable(
            f"the prediction store ({self.description}) is unavailable "
            f"({type(exc).__name__}); retry this feedback later: predictions are kept "
            "for feedback.ttl_s"
        )

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._flush_forever(), name="prediction-writes")

    async def close(self) -> None:
        """Write what is queued (one try), then stop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._queue:
            if not await self._flush_batch():
                break
        self.stats.pending = len(self._queue)
        await self._client.aclose()

    async def _flush_forever(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if len(self._queue) < FLUSH_BATCH:
                await asyncio.sleep(FLUSH_INTERVAL_S)  # gather a batch: one round trip
            try:
                await self._flush_batch()
            except Exception:  # a bug in one batch must not stop every later write
                log.exception("writing a batch of predictions failed")

    async def _flush_batch(self) -> bool:
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(FLUSH_BATCH, len(queue)))]
        self.stats.pending = len(queue)
        if not batch:
            return True
        try:
            await self._write(
                keys=[self.key(request_id) for request_id, _ in batch],
                args=[self._keep_ms, *(encode_prediction(p) for _, p in batch)],
            )
        except RedisError as exc:
            self.stats.dropped_write_failed += len(batch)
            if not self._failing:
                log.warning(
                    "writing predictions to %s failed (%s); dropping them (counted in "
                    "switchyard_feedback_predictions_dropped) until it answers again",
                    self.description, exc,
                )  # fmt: skip
            self._failing = True
            return False
        if self._failing:
            log.info("writing predictions to %s works again", self.description)
        self._failing = False
        return True


def create_prediction_store(
    settings: FeedbackSettings, control: ControlSettings
) -> PredictionStore:
    """In the control store's Redis when there is one (shared by the replicas)."""
    if control.store == "redis":
        url, options = control.connection()
        return RedisPredictionStore(
            url,
            control.prefix,
            control.timeout_s,
            settings,
            connection_options=options,
            description=f"redis control store, prefix '{control.prefix}'",
        )
    return MemoryPredictionStore(settings)
