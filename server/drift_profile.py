"""Reference profiles: the training data's distribution of each input column and output of a
model version, in fixed bins, that online drift (server/drift.py) compares serving with.

A profile is JSON next to the model file: `<model file stem>.profile.json`, else
`profile.json` in the same folder; `models[].versions[].profile` names one explicitly.
Each column holds ascending bin `edges` and `counts` one longer than the edges: bin i counts
values v with edges[i-1] <= v < edges[i] (np.searchsorted side="right"), so bin 0 is the
underflow (below the training minimum) and the last bin the overflow (at or above the
training maximum's successor, and NaN). The edges are the training data's minimum, its
deciles and just above its maximum: training rows fill the ten inner bins evenly and values
outside the training range land in bins of their own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PROFILE_FORMAT = "switchyard.profile/1"
DEFAULT_BINS = 10
# Columns profiled per tensor at most: bounds the metric series a wide input makes.
MAX_COLUMNS_PER_TENSOR = 256
PROFILE_SUFFIX = ".profile.json"
FOLDER_PROFILE_NAME = "profile.json"


class ProfileError(ValueError):
    """A profile that cannot be read or built, with the reason."""


@dataclass(frozen=True, eq=False)
class ColumnProfile:
    name: str  # the metric label: `user.activity`, `features[3]`, `score`
    tensor: str
    column: int  # in the tensor's rows flattened to [rows, columns]
    edges: np.ndarray  # float64 [n_edges], ascending
    counts: np.ndarray  # int64 [n_edges + 1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tensor": self.tensor,
            "column": self.column,
            "edges": [float(e) for e in self.edges],
            "counts": [int(c) for c in self.counts],
        }


@dataclass(frozen=True, eq=False)
class Profile:
    model: str
    version: str
    rows: int
    inputs: tuple[ColumnProfile, ...]
    outputs: tuple[ColumnProfile, ...]

    @property
    def columns(self) -> tuple[ColumnProfile, ...]:
        return (*self.inputs, *self.outputs)

    def output(self, tensor: str) -> ColumnProfile | None:
        """The first profiled column of output `tensor`."""
        return next((c for c in self.outputs if c.tensor == tensor), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "model": self.model,
            "version": self.version,
            "rows": self.rows,
            "inputs": [c.to_dict() for c in self.inputs],
            "outputs": [c.to_dict() for c in self.outputs],
        }

    def save(self, path: Path) -> None:
        tmp_path = path.with_name(path.name + ".tmp")
        tmp_path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        tmp_path.replace(path)  # readers never see half a file


def bin_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts of `values` in the bins `edges` make (len(edges) + 1 of them)."""
    index = np.searchsorted(edges, values, side="right")
    return np.bincount(index, minlength=len(edges) + 1).astype(np.int64)


def quantile_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """The minimum, the inner quantiles and the successor of the maximum of the finite
    values, without repeats; a column of at most `bins` distinct values gets one bin each."""
    finite = values[np.isfinite(values)].astype(np.float64)
    if finite.size == 0:
        raise ProfileError("no finite values to bin")
    distinct = np.unique(finite)
    if len(distinct) <= bins:  # a discrete column: a bin per value
        lower = distinct
    else:  # data values as edges ("lower"), so that no inner bin is empty
        lower = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[:-1], method="lower"))
    return np.append(lower, np.nextafter(distinct[-1], math.inf))  # the maximum lands inside


def column_names(tensor: str, width: int, names: Sequence[str] | None = None) -> list[str]:
    """Metric labels of a tensor's columns: the given names, else `tensor[i]` (`tensor`
    alone for a one-wide tensor)."""
    if names is not None:
        if len(names) != width:
            raise ProfileError(f"{len(names)} names for the {width} columns of '{tensor}'")
        return list(names)
    return [tensor] if width == 1 else [f"{tensor}[{i}]" for i in range(width)]


def as_columns(array: np.ndarray) -> np.ndarray:
    """A tensor as [rows, columns] (a scalar: one row, one column)."""
    array = np.asarray(array)
    if array.ndim == 0:
        return array.reshape(1, 1)
    return array.reshape(array.shape[0], -1)


def profile_tensor(
    tensor: str, array: np.ndarray, names: Sequence[str] | None = None, bins: int = DEFAULT_BINS
) -> list[ColumnProfile]:
    matrix = as_columns(array)
    if matrix.dtype.kind not in "biuf":
        return []  # strings and booleans have no bins
    width = min(matrix.shape[1], MAX_COLUMNS_PER_TENSOR)
    labels = column_names(tensor, matrix.shape[1], names)
    profiles = []
    for column in range(width):
        values = matrix[:, column].astype(np.float64)
        try:
            edges = quantile_edges(values, bins)
        except ProfileError as exc:
            raise ProfileError(f"column {labels[column]}: {exc}") from None
        profiles.append(
            ColumnProfile(labels[column], tensor, column, edges, bin_counts(edges, values))
        )
    return profiles


def build_profile(
    model: str,
    version: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    *,
    input_names: Mapping[str, Sequence[str]] | None = None,
    bins: int = DEFAULT_BINS,
) -> Profile:
    """A profile of training inputs and the model's outputs on them; `input_names`: column
    names per input tensor (the feature names of a Recommend model's row)."""
    if bins < 1:
        raise ProfileError(f"bins must be at least 1, got {bins}")
    names = input_names or {}
    rows = {as_columns(a).shape[0] for a in inputs.values()}
    if len(rows) != 1:
        raise ProfileError(f"the inputs disagree on their rows: {sorted(rows)}")
    return Profile(
        model,
        version,
        rows.pop(),
        tuple(c for t, a in inputs.items() for c in profile_tensor(t, a, names.get(t), bins)),
        tuple(c for t, a in outputs.items() for c in profile_tensor(t, a, None, bins)),
    )


def _column(raw: Any, where: str) -> ColumnProfile:
    try:
        edges = np.asarray(raw["edges"], dtype=np.float64)
        counts = np.asarray(raw["counts"], dtype=np.int64)
        name, tensor, index = str(raw["name"]), str(raw["tensor"]), int(raw["column"])
        column = ColumnProfile(name, tensor, index, edges, counts)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: needs name, tensor, column, edges, counts ({exc})") from None
    if edges.ndim != 1 or counts.shape != (len(edges) + 1,):
        raise ProfileError(f"{where} ({column.name}): counts must be one longer than edges")
    if not np.all(np.diff(edges) > 0) or np.any(counts < 0) or column.column < 0:
        raise ProfileError(f"{where} ({column.name}): edges must ascend, counts be >= 0")
    return column


def parse_profile(raw: Any) -> Profile:
    if not isinstance(raw, dict) or raw.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"not a profile: `format` must be {PROFILE_FORMAT!r}")
    try:
        inputs = tuple(_column(c, f"inputs[{i}]") for i, c in enumerate(raw["inputs"]))
        outputs = tuple(_column(c, f"outputs[{i}]") for i, c in enumerate(raw["outputs"]))
        return Profile(str(raw["model"]), str(raw["version"]), int(raw["rows"]), inputs, outputs)
    except (KeyError, TypeError) as exc:
        raise ProfileError(f"needs model, version, rows, inputs, outputs ({exc})") from None


def load_profile(path: Path) -> Profile:
    """The profile in `path`; ProfileError naming the file and what is wrong."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProfileError(f"cannot read profile {path}: {exc}") from None
    try:
        return parse_profile(raw)
    except ProfileError as exc:
        raise ProfileError(f"profile {path}: {exc}") from None


def default_profile_path(model_path: Path) -> Path:
    """Where a model file's profile is written by default: `<stem>.profile.json` beside it."""
    return model_path.with_name(model_path.stem + PROFILE_SUFFIX)


def find_profile(model_path: Path | None, configured: Path | None) -> Path | None:
    """The profile of a version: the configured one, else `<stem>.profile.json` or
    `profile.json` beside its model file; None when there is none."""
    if configured is not None:
        return configured
    if model_path is None:
        return None
    for candidate in (default_profile_path(model_path), model_path.parent / FOLDER_PROFILE_NAME):
        if candidate.is_file():
            return candidate
    return None
