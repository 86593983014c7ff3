"""What the autoscaling simulator replays: a load trace and a service-time model.

Load trace: a CSV with a `time_s,requests_per_s` header; each rate holds until the next row's
time, and the last row's time ends the trace, so a step reads as it is written.

Service-time model, from a spec string:
    lognormal:p50_s=0.02,p95_s=0.05   service times with that median and p95
    samples:PATH                      resampled from latencies measured on a real variant
                                      (one value in seconds per line, or a CSV with a
                                      `latency_s` column; lines starting with # are skipped)
    constant:0.03                     every request takes exactly this long

Policy configs, from YAML (or JSON): a list of named LatencyPolicyConfig settings,
    policies:
      - name: baseline
        target_latency_s: 0.2
        ...
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import yaml
from pydantic import ValidationError

from switchyard.server.autoscaling.config import AutoscalingConfig
from switchyard.server.autoscaling.latency_policy import LatencyPolicyConfig
from switchyard.server.config_base import error_lines

# z of the standard normal's 95th percentile: ln(p95 / p50) / Z_95 is a lognormal's sigma.
Z_95 = 1.6448536269514722


@dataclass(frozen=True, slots=True)
class LoadTrace:
    times_s: np.ndarray  # increasing, first one >= 0
    requests_per_s: np.ndarray
    end_s: float

    def rate_at(self, time_s: float) -> float:
        """The offered rate at `time_s`: the last row at or before it (0 before the first)."""
        index = int(np.searchsorted(self.times_s, time_s, side="right")) - 1
        return float(self.requests_per_s[index]) if index >= 0 and time_s < self.end_s else 0.0


def load_trace(path: Path) -> LoadTrace:
    """Reads a trace CSV; ValueError names the file and line of what is wrong."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(line for line in handle if not line.startswith("#")))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read trace: {exc.strerror or exc}") from exc
    if not rows or [cell.strip() for cell in rows[0]] != ["time_s", "requests_per_s"]:
        raise ValueError(f"{path}: the first line must be the header time_s,requests_per_s")
    times_s: list[float] = []
    rates: list[float] = []
    for line_number, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise ValueError(f"{path}:{line_number}: expected 2 values, got {len(row)}")
        try:
            time_s, rate = float(row[0]), float(row[1])
        except ValueError:
            raise ValueError(f"{path}:{line_number}: not numbers: {','.join(row)}") from None
        if not (math.isfinite(time_s) and math.isfinite(rate)) or time_s < 0 or rate < 0:
            raise ValueError(f"{path}:{line_number}: time_s and requests_per_s must be >= 0")
        if times_s and time_s <= times_s[-1]:
            raise ValueError(f"{path}:{line_number}: time_s must increase")
        times_s.append(time_s)
        rates.append(rate)
    if len(times_s) < 2:
        raise ValueError(f"{path}: needs at least two rows: the last row's time ends the trace")
    return LoadTrace(np.array(times_s), np.array(rates), times_s[-1])


class ServiceTimeModel(Protocol):
    """Seconds one request takes on a free slot of a replica."""

    @property
    def mean_s(self) -> float: ...

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class LognormalServiceTime:
    p50_s: float
    p95_s: float

    @property
    def sigma(self) -> float:
        return math.log(self.p95_s / self.p50_s) / Z_95

    @property
    def mean_s(self) -> float:
        return self.p50_s * math.exp(self.sigma**2 / 2)

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.lognormal(math.log(self.p50_s), self.sigma, count)


@dataclass(frozen=True, slots=True)
class EmpiricalServiceTime:
    samples_s: np.ndarray

    @property
    def mean_s(self) -> float:
        return float(self.samples_s.mean())

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.choice(self.samples_s, count)


@dataclass(frozen=True, slots=True)
class ConstantServiceTime:
    mean_s: float

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return np.full(count, self.mean_s)


def parse_service_time(spec: str) -> ServiceTimeModel:
    """A model from its spec string (see the module docstring); ValueError says what is wrong."""
    kind, _, argument = spec.partition(":")
    if kind == "lognormal":
        try:
            pairs = dict(item.split("=", 1) for item in argument.split(","))
            p50_s, p95_s = float(pairs.pop("p50_s")), float(pairs.pop("p95_s"))
        except (ValueError, KeyError):
            raise ValueError(
                f"service time {spec!r}: expected lognormal:p50_s=SECONDS,p95_s=SECONDS"
            ) from None
        if pairs:
            raise ValueError(f"service time {spec!r}: unknown {', '.join(pairs)}")
        if not 0 < p50_s < p95_s:
            raise ValueError(f"service time {spec!r}: needs 0 < p50_s < p95_s")
        return LognormalServiceTime(p50_s, p95_s)
    if kind == "constant":
        try:
            seconds = float(argument)
        except ValueError:
            raise ValueError(f"service time {spec!r}: expected constant:SECONDS") from None
        if not seconds > 0:
            raise ValueError(f"service time {spec!r}: needs SECONDS > 0")
        return ConstantServiceTime(seconds)
    if kind == "samples":
        return EmpiricalServiceTime(_read_samples(Path(argument)))
    raise ValueError(
        f"service time {spec!r}: expected lognormal:p50_s=..,p95_s=.., samples:PATH "
        "or constant:SECONDS"
    )


def _read_samples(path: Path) -> np.ndarray:
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except OSError as exc:
        raise ValueError(f"{path}: cannot read latency samples: {exc.strerror or exc}") from exc
    lines = [line for line in lines if line and not line.startswith("#")]
    column = 0
    if lines and not _is_number(lines[0].split(",")[0]):
        header = [cell.strip() for cell in lines.pop(0).split(",")]
        if "latency_s" not in header:
            raise ValueError(f"{path}: the header has no latency_s column")
        column = header.index("latency_s")
    values: list[float] = []
    for line in lines:
        cells = line.split(",")
        value = float(cells[column]) if column < len(cells) and _is_number(cells[column]) else -1
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{path}: not a latency in seconds > 0: {line!r}")
        values.append(value)
    if not values:
        raise ValueError(f"{path}: no latency samples")
    return np.array(values)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_policy_configs(path: Path) -> list[tuple[str, LatencyPolicyConfig]]:
    """The named configs of a policies file; ValueError names the file, policy and setting."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read policies: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    entries = document.get("policies") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list under `policies:`")
    configs: list[tuple[str, LatencyPolicyConfig]] = []
    for index, entry in enumerate(entries):
        where = f"{path}: policies[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping of settings")
        settings = dict(entry)
        name = settings.pop("name", None)
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: name: required, a non-empty string")
        if name in (known for known, _ in configs):
            raise ValueError(f"{where}: name: {name!r} is used twice")
        try:
            configs.append((name, AutoscalingConfig.model_validate(settings).to_policy_config()))
        except ValidationError as exc:
            raise ValueError(f"{where} ({name}): {'; '.join(error_lines(exc))}") from None
    return configs
