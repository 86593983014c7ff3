"""A bounded JSONL log of the largest shadow-vs-primary disagreements.

Logging every comparison would drown the few that matter, so each time window keeps only its
top N by max_abs_diff and writes those, largest first, when the window ends. Writes are
bounded twice: at most `top_n` lines per window, and a file rotated to `<path>.1` (replacing
the previous one) before it would pass `max_file_bytes`, so the log never holds more than
twice that on disk. The writes are small appends made at most once a window; they happen on
the caller's thread, which is acceptable on an event loop at that rate.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from switchyard.router.comparison import Comparison
from switchyard.router.endpoint import VariantTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Disagreement:
    """One request's comparison between its primary and one of its shadows."""

    endpoint: str
    primary: VariantTarget
    shadow: VariantTarget
    request_id: str | None
    comparison: Comparison


class DisagreementLog:
    def __init__(
        self,
        path: Path,
        *,
        top_n: int = 10,
        window_s: float = 60.0,
        min_abs_diff: float = 0.0,
        max_file_bytes: int = 10 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if top_n < 1 or window_s <= 0 or max_file_bytes < 1:
            raise ValueError("top_n, window_s and max_file_bytes must be positive")
        self.path = path
        self._top_n = top_n
        self._window_s = window_s
        # Agreements at or under this difference are not disagreements worth a line.
        self._min_abs_diff = min_abs_diff
        self._max_file_bytes = max_file_bytes
        self._clock = clock  # monotonic: windows survive wall-clock jumps
        self._wall_clock = wall_clock  # for the timestamps people read
        self._window_start_s = clock()
        # Min-heap of (score, sequence, wall time, item): the root is the smallest kept.
        self._heap: list[tuple[float, int, float, Disagreement]] = []
        self._sequence = itertools.count()
        self.written_lines = 0
        self.dropped_lines = 0

    def offer(self, item: Disagreement) -> bool:
        """Consider one comparison; True if it is among its window's largest so far."""
        self._roll_window()
        score = item.comparison.max_abs_diff
        if not score > self._min_abs_diff:
            return False
        entry = (score, next(self._sequence), self._wall_clock(), item)
        if len(self._heap) < self._top_n:
            heapq.heappush(self._heap, entry)
            return True
        if score > self._heap[0][0]:
            heapq.heapreplace(self._heap, entry)
            return True
        return False

    def flush(self) -> int:
        """Write the current window's kept lines, largest first; returns how many were written."""
        kept = sorted(self._heap, key=lambda entry: (-entry[0], entry[1]))
        self._heap.clear()
        written = 0
        for _, _, wall_s, item in kept:
            written += self._write_line(_to_line(item, wall_s))
        return written

    def close(self) -> None:
        self.flush()

    def _roll_window(self) -> None:
        now_s = self._clock()
        if now_s - self._window_start_s >= self._window_s:
            self.flush()
            self._window_start_s = now_s

    def _write_line(self, line: str) -> int:
        data = (line + "\n").encode()
        if len(data) > self._max_file_bytes:
            self.dropped_lines += 1
            return 0
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size + len(data) > self._max_file_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            with self.path.open("ab") as file:
                file.write(data)
        except OSError as exc:
            # A full disk must not fail the shadow path that called us; count and go on.
            self.dropped_lines += 1
            log.warning("cannot write disagreement log %s: %s", self.path, exc)
            return 0
        self.written_lines += 1
        return 1


def _to_line(item: Disagreement, wall_s: float) -> str:
    record = {
        "timestamp": datetime.fromtimestamp(wall_s, UTC).isoformat(),
        "endpoint": item.endpoint,
        "primary": _variant(item.primary),
        "shadow": _variant(item.shadow),
        "request_id": item.request_id,
        **item.comparison.to_dict(),
    }
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


def _variant(target: VariantTarget) -> dict[str, str | None]:
    return {"name": target.name, "model": target.model, "version": target.version}
