"""Comparing a shadow's outputs with the primary's for the same request.

Metrics per output tensor: the largest absolute difference, the fraction of rows whose argmax
agree (classifiers), and the mean overlap of the top-k index sets (rankers: scores over
candidates on the last axis). Rows are every index of the leading axes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# numpy kinds compared by equality only: objects (BYTES), byte and unicode strings.
_NON_NUMERIC_KINDS = frozenset("OSU")


@dataclass(frozen=True, slots=True)
class OutputComparison:
    name: str
    # inf when shapes differ, a non-numeric tensor differs, or only one side is NaN.
    max_abs_diff: float
    # Fraction of rows whose argmax agree; None for scalars, non-numeric or one-wide outputs.
    argmax_agreement: float | None
    # Mean over rows of |top_k(primary) & top_k(shadow)| / k; None unless top_k was asked.
    top_k_overlap: float | None
    shape_match: bool


@dataclass(frozen=True, slots=True)
class Comparison:
    outputs: tuple[OutputComparison, ...]
    # Outputs the primary returned and the shadow did not, and the reverse.
    missing_in_shadow: tuple[str, ...]
    missing_in_primary: tuple[str, ...]
    # Shadow latency minus primary latency: positive when the shadow is slower.
    latency_delta_s: float

    @property
    def max_abs_diff(self) -> float:
        """The largest difference over all outputs; inf when an output is missing on a side."""
        if self.missing_in_shadow or self.missing_in_primary:
            return math.inf
        return max((output.max_abs_diff for output in self.outputs), default=0.0)

    @property
    def argmax_agreement(self) -> float | None:
        """The worst agreement over the outputs that have one."""
        return _min_defined(output.argmax_agreement for output in self.outputs)

    @property
    def top_k_overlap(self) -> float | None:
        return _min_defined(output.top_k_overlap for output in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data; non-finite numbers become strings ("inf"), which JSON lacks."""
        return {
            "max_abs_diff": _json_number(self.max_abs_diff),
            "argmax_agreement": self.argmax_agreement,
            "top_k_overlap": self.top_k_overlap,
            "latency_delta_s": _json_number(self.latency_delta_s),
            "outputs": [
                {
                    "name": output.name,
                    "max_abs_diff": _json_number(output.max_abs_diff),
                    "argmax_agreement": output.argmax_agreement,
                    "top_k_overlap": output.top_k_overlap,
                    "shape_match": output.shape_match,
                }
                for output in self.outputs
            ],
            "missing_in_shadow": list(self.missing_in_shadow),
            "missing_in_primary": list(self.missing_in_primary),
        }


def compare_outputs(
    primary: Mapping[str, np.ndarray],
    shadow: Mapping[str, np.ndarray],
    *,
    primary_latency_s: float,
    shadow_latency_s: float,
    top_k: int | None = None,
) -> Comparison:
    """Compare the outputs the two sides share, by name; `top_k` turns on the overlap metric."""
    outputs = []
    for name in primary:
        if name not in shadow:
            continue
        a, b = np.asarray(primary[name]), np.asarray(shadow[name])
        shape_match = a.shape == b.shape
        outputs.append(
            OutputComparison(
                name=name,
                max_abs_diff=max_abs_diff(a, b),
                argmax_agreement=argmax_agreement(a, b) if shape_match else None,
                top_k_overlap=(
                    top_k_overlap(a, b, top_k) if shape_match and top_k is not None else None
                ),
                shape_match=shape_match,
            )
        )
    return Comparison(
        outputs=tuple(outputs),
        missing_in_shadow=tuple(name for name in primary if name not in shadow),
        missing_in_primary=tuple(name for name in shadow if name not in primary),
        latency_delta_s=shadow_latency_s - primary_latency_s,
    )


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b|, 0 for empty arrays; NaN equals NaN, NaN against a number is inf."""
    if a.shape != b.shape:
        return math.inf
    if a.dtype.kind in _NON_NUMERIC_KINDS or b.dtype.kind in _NON_NUMERIC_KINDS:
        return 0.0 if np.array_equal(a, b) else math.inf
    if a.size == 0:
        return 0.0
    # float64 (complex stays complex): no wrap-around for unsigned or narrow integers.
    a64, b64 = _widen(a), _widen(b)
    with np.errstate(invalid="ignore", over="ignore"):
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        diff = np.where(same, 0.0, np.abs(a64 - b64))
    return float(np.where(np.isnan(diff), math.inf, diff).max())


def argmax_agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Fraction of rows whose argmax over the last axis agree; None where argmax is moot."""
    if not _is_ranked(a) or a.shape != b.shape:
        return None
    return float(np.mean(np.argmax(_rows(a), axis=-1) == np.argmax(_rows(b), axis=-1)))


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float | None:
    """Mean over rows of the shared fraction of the k highest-scoring indices of the last axis.

    Ties go to the lower index on both sides, so equal arrays always overlap fully. k larger
    than the number of candidates compares them all.
    """
    if k < 1:
        raise ValueError(f"top_k must be at least 1, got {k}")
    if not _is_ranked(a) or a.shape != b.shape:
        return None
    rows_a, rows_b = _rows(a), _rows(b)
    k = min(k, rows_a.shape[-1])
    # A stable sort of the negated scores: highest first, ties in index order.
    top_a = np.argsort(-rows_a, axis=-1, kind="stable")[:, :k]
    top_b = np.argsort(-rows_b, axis=-1, kind="stable")[:, :k]
    row_index = np.arange(rows_a.shape[0])[:, None]
    in_top_a = np.zeros(rows_a.shape, dtype=bool)
    in_top_a[row_index, top_a] = True
    return float(np.mean(in_top_a[row_index, top_b].sum(axis=-1) / k))


def _is_ranked(a: np.ndarray) -> bool:
    """Numeric, at least 1-D, and more than one candidate on the last axis."""
    return a.dtype.kind in "biuf" and a.ndim >= 1 and a.shape[-1] > 1 and a.size > 0


def _rows(a: np.ndarray) -> np.ndarray:
    return _widen(a).reshape(-1, a.shape[-1])


def _widen(a: np.ndarray) -> np.ndarray:
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64, copy=False)


def _min_defined(values: Any) -> float | None:
    defined = [value for value in values if value is not None]
    return min(defined) if defined else None


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)
