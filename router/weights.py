"""Traffic weights: validation, normalisation, and the cumulative pick used for random splits."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from switchyard.router.errors import RoutingConfigError
from switchyard.runtimes.client_text import client_text


def validate_weights(raw: Mapping[str, object], variants: Collection[str]) -> dict[str, float]:
    """Weights as floats for every variant, in sorted name order; unlisted variants get 0.

    Weights are relative (95/5 and 0.95/0.05 split alike). Raises RoutingConfigError with
    the key `weights.<variant>` or `weights` when a weight is not a finite non-negative number,
    names an unknown variant, or when every weight is zero.
    """
    if not variants:
        raise RoutingConfigError("variants", "at least one variant is required")
    weights = dict.fromkeys(sorted(variants), 0.0)
    for name, value in raw.items():
        if name not in weights:
            known = ", ".join(weights)
            raise RoutingConfigError(
                f"weights.{client_text(name)}", f"unknown variant (variants: {known})"
            )
        # bool is an int subclass; True as a weight is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RoutingConfigError(
                f"weights.{name}", f"must be a number, got {client_text(repr(value))}"
            )
        if not math.isfinite(value) or value < 0:
            raise RoutingConfigError(f"weights.{name}", f"must be finite and >= 0, got {value}")
        weights[name] = float(value)
    if not any(weights.values()):
        raise RoutingConfigError("weights", "at least one weight must be above zero")
    # Each weight finite is not enough: 1e308 + 1e308 is inf, and shares over an infinite
    # total are 0 or NaN. (math.fsum raises OverflowError for it instead.)
    if not math.isfinite(sum(weights.values())):
        raise RoutingConfigError(
            "weights",
            "the weights add up to more than the largest number; they are relative, so "
            "scale them down (95 and 5 split like 0.95 and 0.05)",
        )
    return weights


def normalise(weights: Mapping[str, float]) -> dict[str, float]:
    """Shares summing to 1, same keys and order."""
    total = math.fsum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def cumulative_pick(shares: Mapping[str, float], point: float) -> str:
    """The variant whose interval of [0, 1) holds `point`, intervals laid out in `shares` order."""
    upper = 0.0
    last = ""
    for name, share in shares.items():
        if share <= 0:
            continue
        upper += share
        last = name
        if point < upper:
            return name
    # Rounding can leave the sum a hair under 1; the top belongs to the last live variant.
    return last
