"""The `models.N.autoscaling` section (and a policies file's entries): the latency policy's
settings, validated here and compiled into the policy's immutable LatencyPolicyConfig."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_core import InitErrorDetails

from switchyard.server.autoscaling.latency_policy import LatencyPolicyConfig
from switchyard.server.config_base import StrictModel, error_details, raise_errors

# The spec's defaults are the schema's: one place says them.
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(LatencyPolicyConfig)}


class AutoscalingConfig(StrictModel):
    """Latency autoscaling of each version of a model (the Ray host; an HPA signal otherwise)."""

    target_latency_s: float = Field(
        gt=0, description="Seconds of the latency percentile the policy holds replicas at."
    )
    percentile: Literal[95, 99] = Field(
        default=_DEFAULTS["percentile"], description="Which latency percentile is held: 95 or 99."
    )
    # Scaling from zero needs a signal from outside the replicas, which this policy lacks.
    min_replicas: int = Field(
        default=_DEFAULTS["min_replicas"], ge=1, description="Replicas kept at least."
    )
    max_replicas: int = Field(
        default=_DEFAULTS["max_replicas"], ge=1, description="Replicas run at most."
    )
    upscale_stabilization_s: float = Field(
        default=_DEFAULTS["upscale_stabilization_s"],
        ge=0,
        description="Seconds of recommendations that must all ask for more before scaling up.",
    )
    downscale_stabilization_s: float = Field(
        default=_DEFAULTS["downscale_stabilization_s"],
        ge=0,
        description="Seconds for which the largest recent recommendation is kept.",
    )
    tolerance: float = Field(
        default=_DEFAULTS["tolerance"],
        ge=0,
        lt=1,
        description="Fraction of the target within which nothing moves.",
    )
    max_scale_up_step: int = Field(
        default=_DEFAULTS["max_scale_up_step"],
        ge=1,
        description="Replicas added per scale_up_period_s, at most.",
    )
    scale_up_period_s: float = Field(
        default=_DEFAULTS["scale_up_period_s"],
        ge=0,
        description="Seconds of the scale-up rate limit.",
    )
    max_scale_down_step: int = Field(
        default=_DEFAULTS["max_scale_down_step"],
        ge=1,
        description="Replicas removed per scale_down_period_s, at most.",
    )
    scale_down_period_s: float = Field(
        default=_DEFAULTS["scale_down_period_s"],
        ge=0,
        description="Seconds of the scale-down rate limit.",
    )
    max_ongoing_requests: int = Field(
        default=_DEFAULTS["max_ongoing_requests"],
        ge=1,
        description="Requests one replica serves at once; in-flight over it is the utilisation.",
    )
    min_target_utilization: float = Field(
        default=_DEFAULTS["min_target_utilization"],
        gt=0,
        le=1,
        description="Lowest utilisation the estimate aims at (caps a latency floor's effect).",
    )
    max_target_utilization: float = Field(
        default=_DEFAULTS["max_target_utilization"],
        gt=0,
        le=1,
        description="Highest utilisation the estimate aims at (headroom below the knee).",
    )
    saturated_scale_factor: float = Field(
        default=_DEFAULTS["saturated_scale_factor"],
        gt=1,
        description="The estimate's multiple of a saturated load (probing upwards).",
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> AutoscalingConfig:
        raise_errors("autoscaling", self._bound_errors())
        return self

    def _bound_errors(self) -> Iterator[InitErrorDetails]:
        if self.max_replicas < self.min_replicas:
            message = f"must be >= min_replicas ({self.min_replicas})"
            yield error_details(("max_replicas",), message, self.max_replicas)
        if self.min_target_utilization > self.max_target_utilization:
            message = f"must be <= max_target_utilization ({self.max_target_utilization})"
            yield error_details(("min_target_utilization",), message, self.min_target_utilization)

    def to_policy_config(self) -> LatencyPolicyConfig:
        return LatencyPolicyConfig(**self.model_dump())
