"""An endpoint: the name callers use, its variants, and the policies that choose among them.

Specs are immutable and validated on construction, so every spec in a routing table is usable.
Validation errors are RoutingConfigErrors whose key is relative to the endpoint
(`weights.canary`, `shadow.fraction`); the table builder prefixes the endpoint's own path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from switchyard.router.errors import RoutingConfigError
from switchyard.router.rollout_plan import RolloutPlan
from switchyard.router.weights import normalise, validate_weights

DEFAULT_ROUTING_KEY_PARAMETER = "routing_key"
DEFAULT_ROUTING_KEY_HEADER = "x-switchyard-routing-key"
DEFAULT_OVERRIDE_PARAMETER = "variant"
DEFAULT_OVERRIDE_HEADER = "x-switchyard-variant"
DEFAULT_SHADOW_MAX_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class VariantTarget:
    """A variant: its name within the endpoint and the model version that serves it."""

    name: str
    model: str
    # None serves the model's default version.
    version: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingKeySpec:
    """Where a request carries its routing key (a user id); None turns that source off.

    The request parameter wins over the header when both are present.
    """

    parameter: str | None = DEFAULT_ROUTING_KEY_PARAMETER
    header: str | None = DEFAULT_ROUTING_KEY_HEADER


@dataclass(frozen=True, slots=True)
class OverrideSpec:
    """Whether, and where, a caller may name the variant to serve it."""

    allowed: bool = True
    parameter: str | None = DEFAULT_OVERRIDE_PARAMETER
    header: str | None = DEFAULT_OVERRIDE_HEADER


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    """Mirror `fraction` of requests to every one of `variants`, at most `max_concurrency`
    shadow calls of this endpoint running at once (over that, shadows are dropped)."""

    variants: tuple[str, ...]
    fraction: float
    max_concurrency: int = DEFAULT_SHADOW_MAX_CONCURRENCY

    def __post_init__(self) -> None:
        if not self.variants:
            raise RoutingConfigError("variants", "at least one shadow variant is required")
        if len(set(self.variants)) != len(self.variants):
            raise RoutingConfigError("variants", f"variants repeat: {list(self.variants)}")
        if not (math.isfinite(self.fraction) and 0 <= self.fraction <= 1):
            raise RoutingConfigError("fraction", f"must be in [0, 1], got {self.fraction}")
        if self.max_concurrency < 1:
            raise RoutingConfigError("max_concurrency", "must be at least 1")


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One endpoint's variants and traffic policy.

    `weights` are the relative weights as given, for every variant (0 where unlisted, which is
    how shadow-only variants are declared); `shares` are the same normalised to sum to 1.
    Both are keyed in sorted variant order, so reordering the config changes no assignment.
    """

    name: str
    variants: Mapping[str, VariantTarget]
    weights: Mapping[str, float]
    routing_key: RoutingKeySpec = RoutingKeySpec()
    override: OverrideSpec = OverrideSpec()
    shadow: ShadowSpec | None = None
    rollout: RolloutPlan | None = None
    shares: Mapping[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key, target in self.variants.items():
            if key != target.name:
                raise RoutingConfigError(f"variants.{key}", f"is named '{target.name}'")
        weights = validate_weights(self.weights, self.variants)
        # Read-only views: a spec is shared by every in-flight request of a table snapshot.
        object.__setattr__(self, "variants", MappingProxyType(dict(self.variants)))
        object.__setattr__(self, "weights", MappingProxyType(weights))
        object.__setattr__(self, "shares", MappingProxyType(normalise(weights)))
        if self.shadow is not None:
            for variant in self.shadow.variants:
                self._require_variant(variant, "shadow.variants")
        if self.rollout is not None:
            self._require_variant(self.rollout.stable, "rollout.stable")
            self._require_variant(self.rollout.canary, "rollout.canary")

    def _require_variant(self, name: str, key: str) -> None:
        if name not in self.variants:
            known = ", ".join(sorted(self.variants))
            raise RoutingConfigError(key, f"unknown variant '{name}' (variants: {known})")
