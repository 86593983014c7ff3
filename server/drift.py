"""Online drift: each model version's inputs and outputs, binned as its reference profile
(server/drift_profile.py) bins them, over a sliding window, compared with the profile.

The request path only hands the (input, output) arrays to `DriftService.observe`: a dict
look-up, a token bucket (rows per second per version: beyond it requests are sampled out)
and a put into a bounded queue (full: dropped and counted). A background task bins what is
queued (np.searchsorted, one np.bincount per batch of requests) into the current slot of a
ring of `drift.window_slots` slots spanning `drift.window_s`, so old data ages out slot by
slot; every `drift.export_interval_s` it computes, per profiled column, the population
stability index and the Jensen-Shannon distance of the window against the profile and sets
the gauges. Shadows: the primary's and the shadow's score over the same window, in the
primary's profile bins (or bins from the primary's first scores), compared by PSI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from switchyard.server.config_sections import DriftSettings
from switchyard.server.drift_profile import (
    ColumnProfile,
    Profile,
    ProfileError,
    as_columns,
    find_profile,
    load_profile,
    quantile_edges,
)
from switchyard.server.repository import Catalog, LoadedModel

log = logging.getLogger(__name__)

# Share given to an empty bin, so that PSI's logarithm stays finite.
PSI_EPSILON = 1e-4
# Scores a shadow pair collects to make its bins when the primary has no profile.
SHADOW_BIN_SAMPLES = 500
SCORE_OUTPUT = "score"
# The binning task wakes this often and bins everything queued at once: a batch of many
# requests costs about what one does (a searchsorted per column, one bincount).
BIN_INTERVAL_S = 0.1


def _shares(counts: np.ndarray, epsilon: float = 0.0) -> np.ndarray:
    total = counts.sum()
    shares = counts / total if total > 0 else np.full(len(counts), 1.0 / len(counts))
    if epsilon > 0:
        shares = np.maximum(shares, epsilon)
        shares = shares / shares.sum()
    return np.asarray(shares, dtype=np.float64)


def psi(reference: np.ndarray, observed: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index sum((q - p) ln(q / p)) of observed counts q against
    reference counts p; empty bins count as `epsilon`."""
    p, q = _shares(reference, epsilon), _shares(observed, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: np.ndarray, observed: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]): the square root of the divergence."""
    p, q = _shares(reference), _shares(observed)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / m[nonzero])))

    divergence = max((kl(p) + kl(q)) / 2, 0.0)  # rounding can dip below 0
    return math.sqrt(min(divergence, 1.0))


class SlidingCounts:
    """Bin counts over the last `window_s`, as a ring of `slots` slots of window_s / slots
    each: a slot is cleared when the clock comes round to it again."""

    def __init__(self, n_bins: int, window_s: float, slots: int, now_s: float) -> None:
        self._counts = np.zeros((slots, n_bins), dtype=np.int64)
        self._samples = np.zeros(slots, dtype=np.int64)
        self._slot_s = window_s / slots
        self._tick = math.floor(now_s / self._slot_s)

    def _advance(self, now_s: float) -> int:
        tick = math.floor(now_s / self._slot_s)
        slots = len(self._samples)
        for step in range(1, min(tick - self._tick, slots) + 1):
            self._counts[(self._tick + step) % slots] = 0
            self._samples[(self._tick + step) % slots] = 0
        self._tick = max(tick, self._tick)
        return self._tick % slots

    def add(self, counts: np.ndarray, samples: int, now_s: float) -> None:
        slot = self._advance(now_s)
        self._counts[slot] += counts
        self._samples[slot] += samples

    def totals(self, now_s: float) -> tuple[np.ndarray, int]:
        self._advance(now_s)
        return self._counts.sum(axis=0), int(self._samples.sum())


class ColumnBinner:
    """Bins columns of tensors into one flat vector of counts (each column at its offset)."""

    def __init__(self, columns: tuple[ColumnProfile, ...]) -> None:
        self.columns = columns
        sizes = [len(c.counts) for c in columns]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
        self.n_bins = int(self.offsets[-1])
        self.by_tensor: dict[str, list[int]] = {}
        for index, column in enumerate(columns):
            self.by_tensor.setdefault(column.tensor, []).append(index)

    def counts(self, arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, int]:
        """The counts of the columns the arrays hold, and the rows binned (the most any
        tensor had: rows are requests' rows, whatever tensor holds them)."""
        parts = []
        rows = 0
        for tensor, indexes in self.by_tensor.items():
            array = arrays.get(tensor)
            if array is None or array.dtype.kind not in "biuf":
                continue
            matrix = as_columns(array)
            rows = max(rows, matrix.shape[0])
            for index in indexes:
                column = self.columns[index]
                if column.column < matrix.shape[1]:
                    bins = np.searchsorted(column.edges, matrix[:, column.column], side="right")
                    parts.append(bins + self.offsets[index])
        if not parts:
            return np.zeros(self.n_bins, dtype=np.int64), 0
        flat = np.concatenate(parts)
        return np.bincount(flat, minlength=self.n_bins).astype(np.int64), rows

    def column_counts(self, counts: np.ndarray, index: int) -> np.ndarray:
        return counts[self.offsets[index] : self.offsets[index + 1]]


class DriftGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["model", "version", "feature", "kind"]
        # Workers (server.workers > 1) each judge their own window: the worst one shows.
        self.psi = Gauge(
            "switchyard_drift_psi",
            "Population stability index of a model version's input feature or output "
            "(kind) over the drift window against its reference profile.",
            labels,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.js_distance = Gauge(
            "switchyard_drift_js_distance",
            "Jensen-Shannon distance (base 2, 0 to 1) of a feature or output over the drift "
            "window against the reference profile.",
            labels,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.window_samples = Gauge(
            "switchyard_drift_window_samples",
            "Rows in a model version's drift window (drift is judged from drift.min_samples).",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.features_drifted = Gauge(
            "switchyard_drift_features_drifted",
            "Input features of a model version whose PSI is over drift.psi_threshold (0 "
            "while the window has fewer than drift.min_samples rows).",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.requests = Counter(
            "switchyard_drift_requests",
            "Requests offered to drift monitoring by outcome: observed, sampled_out (over "
            "drift.max_rows_per_s), dropped_queue_full.",
            ["model", "version", "outcome"],
            registry=registry,
        )
        self.shadow_score_psi = Gauge(
            "switchyard_shadow_score_psi",
            "PSI between the shadow's and the primary's score distributions over the drift window.",
            ["endpoint", "shadow"],
            registry=registry,
            multiprocess_mode="livemax",
        )


class DriftMonitor:
    """One model version's window against its profile."""

    def __init__(self, profile: Profile, settings: DriftSettings, now_s: float) -> None:
        self.profile = profile
        self._settings = settings
        self.binner = ColumnBinner(profile.columns)
        self.window = SlidingCounts(
            self.binner.n_bins, settings.window_s, settings.window_slots, now_s
        )
        self._n_inputs = len(profile.inputs)

    def add(self, arrays: Mapping[str, np.ndarray], now_s: float) -> None:
        counts, rows = self.binner.counts(arrays)
        self.window.add(counts, rows, now_s)

    def judge(self, now_s: float) -> tuple[int, list[tuple[ColumnProfile, str, float, float]]]:
        """The window's rows and, once it has min_samples, (column, kind, PSI, JS) each."""
        counts, samples = self.window.totals(now_s)
        if samples < self._settings.min_samples:
            return samples, []
        results = []
        for index, column in enumerate(self.binner.columns):
            observed = self.binner.column_counts(counts, index)
            kind = "input" if index < self._n_inputs else "output"
            results.append(
                (column, kind, psi(column.counts, observed), js_distance(column.counts, observed))
            )
        return samples, results


@dataclass(eq=False)
class _Intake:
    """What the request path keeps per model version: its token bucket and counts."""

    model: LoadedModel
    rate: float
    tokens: float
    last_s: float
    state: Literal["pending", "on", "off"] = "pending"
    monitor: DriftMonitor | None = None
    sampled_out: int = 0
    dropped: int = 0
    observed: int = 0
    exported: dict[str, int] = field(default_factory=dict)
    series: set[tuple[str, str]] = field(default_factory=set)

    def admit(self, rows: int, now_s: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now_s - self.last_s) * self.rate)
        self.last_s = now_s
        # A request wider than the bucket passes when the bucket is full, then owes it.
        if self.tokens < min(rows, self.rate):
            self.sampled_out += 1
            return False
        self.tokens -= rows
        return True


class _ShadowPair:
    """A primary's and a shadow's score windows, binned alike."""

    def __init__(self, edges: np.ndarray | None, settings: DriftSettings, now_s: float) -> None:
        self._settings = settings
        self._pending: list[np.ndarray] = []  # primary scores gathered to make bins from
        self.edges: np.ndarray | None = None
        self.primary: SlidingCounts | None = None
        self.shadow: SlidingCounts | None = None
        if edges is not None:
            self._start(edges, now_s)

    def _start(self, edges: np.ndarray, now_s: float) -> None:
        settings = self._settings
        self.edges = edges
        window = (len(edges) + 1, settings.window_s, settings.window_slots, now_s)
        self.primary = SlidingCounts(*window)
        self.shadow = SlidingCounts(*window)

    def add(self, primary: np.ndarray, shadow: np.ndarray, now_s: float) -> None:
        if self.edges is None:
            self._pending.append(primary)
            gathered = np.concatenate(self._pending)
            if gathered.size < SHADOW_BIN_SAMPLES:
                return
            self._pending = []
            try:
                self._start(quantile_edges(gathered), now_s)
            except ProfileError:
                return  # no finite scores yet
        assert self.edges is not None and self.primary is not None and self.shadow is not None
        for window, values in ((self.primary, primary), (self.shadow, shadow)):
            index = np.searchsorted(self.edges, values, side="right")
            window.add(np.bincount(index, minlength=len(self.edges) + 1), values.size, now_s)

    def psi(self, now_s: float) -> float | None:
        if self.primary is None or self.shadow is None:
            return None
        primary, primary_n = self.primary.totals(now_s)
        shadow, shadow_n = self.shadow.totals(now_s)
        if min(primary_n, shadow_n) < self._settings.min_samples:
            return None
        return psi(primary, shadow)


_ModelItem = tuple[_Intake, Mapping[str, np.ndarray], Mapping[str, np.ndarray]]
_ShadowItem = tuple[tuple[str, str], tuple[str, str, str], np.ndarray, np.ndarray]


class DriftService:
    """Every model version's drift monitor in this process, and the task that feeds them."""

    def __init__(
        self,
        settings: DriftSettings,
        registry: CollectorRegistry,
        catalog: Callable[[], Catalog],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.gauges = DriftGauges(registry)
        self._catalog = catalog
        self._clock = clock
        self._intakes: dict[tuple[str, str], _Intake] = {}
        self._retired: list[_Intake] = []
        self._shadows: dict[tuple[str, str], _ShadowPair] = {}
        self._queue: asyncio.Queue[_ModelItem | _ShadowItem] = asyncio.Queue(settings.queue_size)
        self._tasks: list[asyncio.Task[None]] = []

    # The request path ------------------------------------------------------------------

    def observe(
        self,
        model: LoadedModel,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
    ) -> None:
        """Offer one request's arrays (never copied: the serving path does not change them)."""
        key = (model.name, model.version)
        intake = self._intakes.get(key)
        now_s = self._clock()
        if intake is None or intake.model is not model:  # new, or loaded again
            if intake is not None:
                self._retired.append(intake)  # its series go at the next export
            rate = self.settings.max_rows_per_s
            intake = self._intakes[key] = _Intake(model, rate, rate, now_s)
        if intake.state == "off":
            return
        rows = max((a.shape[0] if a.ndim else 1 for a in inputs.values()), default=1)
        if not intake.admit(rows, now_s):
            return
        try:
            self._queue.put_nowait((intake, inputs, outputs))
        except asyncio.QueueFull:
            intake.dropped += 1

    def observe_shadow(
        self,
        endpoint: str,
        shadow: str,
        primary_version: tuple[str, str],
        primary_outputs: Mapping[str, np.ndarray],
        shadow_outputs: Mapping[str, np.ndarray],
    ) -> None:
        """Offer a mirrored request's score on both sides (`score`, else the first output
        both returned numerically)."""
        name = SCORE_OUTPUT if SCORE_OUTPUT in primary_outputs else None
        if name is None or name not in shadow_outputs:
            name = next((n for n in primary_outputs if n in shadow_outputs), None)
        if name is None:
            return
        primary, other = np.asarray(primary_outputs[name]), np.asarray(shadow_outputs[name])
        if primary.dtype.kind not in "biuf" or other.dtype.kind not in "biuf":
            return
        item = ((endpoint, shadow), (*primary_version, name), primary.ravel(), other.ravel())
        with contextlib.suppress(asyncio.QueueFull):  # best effort: the request goes on
            self._queue.put_nowait(item)

    # Background ------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._bin_forever(), name="drift-bin"),
            asyncio.create_task(self._export_forever(), name="drift-export"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _bin_forever(self) -> None:
        while True:
            items = [await self._queue.get()]
            await asyncio.sleep(BIN_INTERVAL_S)  # let more arrive: they bin together
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                self.bin(items)
            except Exception:  # one bad batch must not end drift monitoring
                log.exception("binning drift samples failed")

    def bin(self, items: list[_ModelItem | _ShadowItem]) -> None:
        """Bin queued items: one bincount per model version for the whole batch."""
        now_s = self._clock()
        grouped: dict[int, tuple[_Intake, list[Mapping[str, np.ndarray]]]] = {}
        shadows: list[_ShadowItem] = []
        for item in items:
            if isinstance(item[0], _Intake):
                intake, inputs, outputs = item
                grouped.setdefault(id(intake), (intake, []))[1].append({**inputs, **outputs})
            else:
                shadows.append(item)
        for intake, arrays in grouped.values():
            intake.observed += len(arrays)
            monitor = self._monitor(intake, now_s)
            if monitor is None:
                continue
            names = {name for a in arrays for name in a}
            merged = {}
            for name in names:
                parts = [as_columns(a[name]) for a in arrays if name in a]
                if len({p.shape[1] for p in parts}) == 1:  # same width: one array
                    merged[name] = np.concatenate(parts)
            monitor.add(merged, now_s)
        # After the versions: a shadow pair's first item finds its primary's profile loaded.
        for shadow in shadows:
            self._add_shadow(shadow, now_s)

    def _monitor(self, intake: _Intake, now_s: float) -> DriftMonitor | None:
        if intake.state == "pending":
            intake.monitor = self._load_monitor(intake.model, now_s)
            intake.state = "off" if intake.monitor is None else "on"
        return intake.monitor

    def _load_monitor(self, model: LoadedModel, now_s: float) -> DriftMonitor | None:
        served = self._catalog().get(model.name)
        if served is not None and not served.config.drift:
            return None
        source = model.source
        path = find_profile(
            None if source is None else source.path, None if source is None else source.profile
        )
        if path is None:
            where = "" if source is None or source.path is None else f" beside {source.path}"
            log.info(
                "no reference profile for %s%s: no drift series for it (switchyard profile "
                "build makes one)",
                model.label,
                where,
            )
            return None
        try:
            profile = load_profile(path)
        except ProfileError as exc:
            log.warning("%s: %s; no drift series for it", model.label, exc)
            return None
        known = {s.name for s in (*model.signature.inputs, *model.signature.outputs)}
        unknown = sorted({c.tensor for c in profile.columns} - known)
        if unknown:
            log.warning("profile %s of %s names tensors it lacks: %s", path, model.label, unknown)
        log.info("drift of %s against %s (%d columns)", model.label, path, len(profile.columns))
        return DriftMonitor(profile, self.settings, now_s)

    def _add_shadow(self, item: _ShadowItem, now_s: float) -> None:
        pair_key, (model, version, output), primary, shadow = item
        pair = self._shadows.get(pair_key)
        if pair is None:
            edges = None
            intake = self._intakes.get((model, version))
            if intake is not None and intake.monitor is not None:
                column = intake.monitor.profile.output(output)
                edges = None if column is None else column.edges
            pair = self._shadows[pair_key] = _ShadowPair(edges, self.settings, now_s)
        pair.add(primary, shadow, now_s)

    async def _export_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.export_interval_s)
            try:
                self.export()
            except Exception:  # the next export may work
                log.exception("exporting drift metrics failed")

    def export(self) -> None:
        """Judge every window now and set the gauges; forget versions no longer served."""
        now_s = self._clock()
        catalog = self._catalog()
        gauges = self.gauges
        threshold = self.settings.psi_threshold
        retired, self._retired = self._retired, []
        for intake in retired:
            self._export_counts(intake)
            self._remove(intake)
        for key, intake in list(self._intakes.items()):
            model, version = key
            self._export_counts(intake)
            served = catalog.get(model)
            if served is None or served.versions.get(version) is not intake.model:
                self._remove(intake)
                del self._intakes[key]
                continue
            if intake.monitor is None:
                continue
            samples, results = intake.monitor.judge(now_s)
            gauges.window_samples.labels(model, version).set(samples)
            drifted = 0
            series = set()
            for column, kind, psi_value, js_value in results:
                gauges.psi.labels(model, version, column.name, kind).set(psi_value)
                gauges.js_distance.labels(model, version, column.name, kind).set(js_value)
                series.add((column.name, kind))
                drifted += kind == "input" and psi_value > threshold
            for name, kind in intake.series - series:  # not judged now: too few rows
                _remove(gauges.psi, model, version, name, kind)
                _remove(gauges.js_distance, model, version, name, kind)
            intake.series = series
            gauges.features_drifted.labels(model, version).set(drifted)
        for (endpoint, shadow), pair in self._shadows.items():
            value = pair.psi(now_s)
            if value is not None:
                gauges.shadow_score_psi.labels(endpoint, shadow).set(value)

    def _export_counts(self, intake: _Intake) -> None:
        model = intake.model
        for outcome, value in (
            ("observed", intake.observed),
            ("sampled_out", intake.sampled_out),
            ("dropped_queue_full", intake.dropped),
        ):
            added = value - intake.exported.get(outcome, 0)
            if added:
                self.gauges.requests.labels(model.name, model.version, outcome).inc(added)
                intake.exported[outcome] = value

    def _remove(self, intake: _Intake) -> None:
        model, version = intake.model.name, intake.model.version
        for name, kind in intake.series:
            _remove(self.gauges.psi, model, version, name, kind)
            _remove(self.gauges.js_distance, model, version, name, kind)
        _remove(self.gauges.window_samples, model, version)
        _remove(self.gauges.features_drifted, model, version)


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
