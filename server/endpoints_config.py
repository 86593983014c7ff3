"""The `endpoints:` section: its schema, and the compile step into router's immutable specs.

    endpoints:
      - name: recs                          # what callers address
        variants:                           # variant name -> the model version serving it
          stable: {model: ranker, version: "1"}
          canary: {model: ranker, version: "2"}
          next:   {model: ranker-next}      # no version: the model's default version
        weights: {stable: 95, canary: 5}    # relative; unlisted variants get 0. Default:
                                            # 1 for every variant that is not a shadow
        routing_key: {parameter: user_id, header: x-user-id}   # null turns a source off
        override: {allowed: true, parameter: variant, header: x-switchyard-variant}
        shadow: {variants: [next], fraction: 0.1, max_concurrency: 8}
        rollout: {stable: stable, canary: canary, steps_percent: [5, 25, 50, 100], ...}

router/ stays free of pydantic: `compile_routing_table` is the boundary. The rules of the specs
themselves (weights naming variants, rollout variants existing, ...) stay with the specs, and
their errors are placed under the endpoint's key path here (`endpoints.0.weights.canary`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import InitErrorDetails

from switchyard.router.endpoint import (
    DEFAULT_OVERRIDE_HEADER,
    DEFAULT_OVERRIDE_PARAMETER,
    DEFAULT_ROUTING_KEY_HEADER,
    DEFAULT_ROUTING_KEY_PARAMETER,
    DEFAULT_SHADOW_MAX_CONCURRENCY,
    EndpointSpec,
    OverrideSpec,
    RoutingKeySpec,
    ShadowSpec,
    VariantTarget,
)
from switchyard.router.errors import RoutingConfigError
from switchyard.router.rollout_plan import RolloutPlan
from switchyard.router.table import RoutingTable
from switchyard.server.config_base import (
    NAME_PATTERN,
    ConfigError,
    Loc,
    Name,
    StrictModel,
    VersionName,
    error_details,
    error_lines,
    raise_errors,
)

# HTTP headers are case-insensitive and gRPC metadata keys lowercase: keep one form.
HeaderName = Annotated[str, Field(pattern=NAME_PATTERN), AfterValidator(str.lower)]
ParameterName = Annotated[str, Field(min_length=1)]
_PLAN = RolloutPlan(stable="stable", canary="canary")  # the spec's defaults are the schema's


class VariantConfig(StrictModel):
    """The model version serving a variant."""

    model: Name = Field(description="The served model.")
    version: VersionName | None = Field(
        default=None, description='Its version (YAML `2` is read as "2"); unset: the default.'
    )


class RoutingKeyConfig(StrictModel):
    """Where a request carries its sticky routing key; null turns a source off."""

    parameter: ParameterName | None = Field(
        default=DEFAULT_ROUTING_KEY_PARAMETER,
        description="Request parameter holding the key; wins over the header.",
    )
    header: HeaderName | None = Field(
        default=DEFAULT_ROUTING_KEY_HEADER,
        description="Header / gRPC metadata key holding the key (lower-cased).",
    )


class OverrideConfig(StrictModel):
    """Whether, and where, a caller may name the variant that serves it."""

    allowed: bool = Field(default=True, description="Whether callers may name a variant.")
    parameter: ParameterName | None = Field(
        default=DEFAULT_OVERRIDE_PARAMETER, description="Request parameter naming the variant."
    )
    header: HeaderName | None = Field(
        default=DEFAULT_OVERRIDE_HEADER,
        description="Header / gRPC metadata key naming the variant (lower-cased).",
    )


class ShadowConfig(StrictModel):
    """Mirror a fraction of requests to shadow variants, whose answers are only compared."""

    variants: list[Name] = Field(min_length=1, description="The shadow variants.")
    fraction: float = Field(ge=0, le=1, description="Fraction of requests mirrored, in [0, 1].")
    max_concurrency: int = Field(
        default=DEFAULT_SHADOW_MAX_CONCURRENCY,
        ge=1,
        description="Shadow calls of this endpoint at once; more are dropped.",
    )


class RolloutConfig(StrictModel):
    """A progressive canary: traffic moves from stable to canary in steps, each one judged."""

    stable: Name = Field(description="The variant traffic moves from.")
    canary: Name = Field(description="The variant traffic moves to.")
    steps_percent: list[float] = Field(
        default_factory=lambda: list(_PLAN.steps_percent),
        min_length=1,
        description="Canary percentages of the steps, increasing, in (0, 100].",
    )
    step_interval_s: float = Field(
        default=_PLAN.step_interval_s, gt=0, description="Seconds each step lasts at least."
    )
    min_requests: int = Field(
        default=_PLAN.min_requests,
        ge=1,
        description="Requests the canary serves in a step before it is judged.",
    )
    max_error_rate: float | None = Field(
        default=None, ge=0, description="Canary error rate, as a fraction (0.01 = 1%)."
    )
    max_error_rate_increase: float | None = Field(
        default=None, ge=0, description="Canary error rate minus stable error rate."
    )
    max_p95_latency_s: float | None = Field(
        default=None, ge=0, description="Seconds of the canary's p95 latency."
    )
    max_p95_latency_ratio: float | None = Field(
        default=None, ge=0, description="Canary p95 over stable p95 (1.2: 20% slower)."
    )
    max_p95_latency_increase_s: float | None = Field(
        default=None, ge=0, description="Seconds of canary p95 minus stable p95."
    )
    min_feedback_samples: int = Field(
        default=_PLAN.min_feedback_samples,
        ge=1,
        description="Joined feedback requests each of canary and stable needs in a step "
        "before the quality checks judge it.",
    )
    max_ctr_drop: float | None = Field(
        default=None,
        ge=0,
        description="Stable CTR@k minus canary CTR@k (absolute) tolerated; a larger drop, "
        "significant at `significance`, rolls back.",
    )
    max_auc_drop: float | None = Field(
        default=None,
        ge=0,
        description="Stable AUC minus canary AUC tolerated; a larger drop, significant at "
        "`significance`, rolls back.",
    )
    significance: float = Field(
        default=_PLAN.significance,
        gt=0,
        lt=0.5,
        description="One-sided alpha of the quality tests (z-test on CTR@k, Hanley-McNeil on AUC).",
    )

    def to_plan(self) -> RolloutPlan:
        return RolloutPlan(**{**self.model_dump(), "steps_percent": tuple(self.steps_percent)})


class EndpointConfig(StrictModel):
    """What callers address: variants, their weights, and the policies that choose among them."""

    name: Name = Field(description="The endpoint's name; not a model's name.")
    variants: dict[Name, VariantConfig] = Field(
        min_length=1, description="Variant name -> the model version serving it."
    )
    weights: dict[str, Annotated[float, Field(ge=0)]] | None = Field(
        default=None,
        description="Relative weights; unlisted variants get 0. Unset: 1 for every variant "
        "that is not a shadow.",
    )
    routing_key: RoutingKeyConfig | None = Field(
        default_factory=RoutingKeyConfig,
        description="Where the sticky routing key is read; null: random assignment.",
    )
    override: OverrideConfig = Field(
        default_factory=OverrideConfig, description="Callers naming their variant."
    )
    shadow: ShadowConfig | None = Field(default=None, description="Shadow traffic.")
    rollout: RolloutConfig | None = Field(default=None, description="A progressive canary.")

    @model_validator(mode="after")
    def _check_sources(self) -> EndpointConfig:
        # One request value cannot be both the sticky key and the override.
        key = self.routing_key or RoutingKeyConfig(parameter=None, header=None)
        for source in ("parameter", "header"):
            value = getattr(key, source)
            if value is not None and value == getattr(self.override, source):
                message = f"'{value}' is also the routing key's {source}"
                raise_errors("endpoint", [error_details(("override", source), message, value)])
        return self

    def to_spec(self) -> EndpointSpec:
        """The router's spec; RoutingConfigError (key relative to the endpoint) if it breaks
        one of the spec's own rules."""
        shadow = None
        if self.shadow is not None:
            try:
                shadow = ShadowSpec(
                    tuple(self.shadow.variants), self.shadow.fraction, self.shadow.max_concurrency
                )
            except RoutingConfigError as exc:
                raise exc.within("shadow") from None
        if self.weights is None:
            shadowed = set(shadow.variants) if shadow else set()
            weights = {v: 1.0 for v in self.variants if v not in shadowed}
            if not weights:
                raise RoutingConfigError("weights", "required when every variant is a shadow")
        else:
            weights = dict(self.weights)
        rollout = None
        if self.rollout is not None:
            try:
                rollout = self.rollout.to_plan()
            except RoutingConfigError as exc:
                raise exc.within("rollout") from None
        return EndpointSpec(
            name=self.name,
            variants={
                name: VariantTarget(name=name, model=target.model, version=target.version)
                for name, target in self.variants.items()
            },
            weights=weights,
            routing_key=(
                RoutingKeySpec(self.routing_key.parameter, self.routing_key.header)
                if self.routing_key is not None
                else RoutingKeySpec(parameter=None, header=None)
            ),
            override=OverrideSpec(
                self.override.allowed, self.override.parameter, self.override.header
            ),
            shadow=shadow,
            rollout=rollout,
        )


def _model_errors(
    endpoint: EndpointConfig, models: Mapping[str, Collection[str]]
) -> Iterator[tuple[Loc, str]]:
    for name, target in endpoint.variants.items():
        if target.model not in models:
            known = ", ".join(sorted(models)) or "none"
            yield ("variants", name, "model"), f"unknown model '{target.model}' (models: {known})"
        elif target.version is not None and target.version not in models[target.model]:
            known = ", ".join(models[target.model])
            yield (
                ("variants", name, "version"),
                f"model '{target.model}' has no version '{target.version}' (versions: {known})",
            )


def compile_endpoints(
    endpoints: Sequence[EndpointConfig],
    models: Mapping[str, Collection[str]] | None = None,
    prefix: Loc = (),
) -> tuple[RoutingTable | None, list[InitErrorDetails]]:
    """The compiled table, or None and every error (at `prefix` + the endpoint's index).

    `models` maps each served model to its versions; when given, every variant must name one
    of them and no endpoint may take a model's name.
    """
    errors: list[InitErrorDetails] = []
    specs: list[EndpointSpec] = []
    seen: dict[str, int] = {}
    for index, endpoint in enumerate(endpoints):
        if endpoint.name in seen:
            message = f"endpoint name repeats (endpoints.{seen[endpoint.name]} has it)"
            errors.append(error_details((*prefix, index, "name"), message, endpoint.name))
        seen.setdefault(endpoint.name, index)
        if models is not None:
            if endpoint.name in models:
                message = f"'{endpoint.name}' is also a model name; an endpoint needs its own"
                errors.append(error_details((*prefix, index, "name"), message, endpoint.name))
            for loc, message in _model_errors(endpoint, models):
                errors.append(error_details((*prefix, index, *loc), message, endpoint.name))
        try:
            specs.append(endpoint.to_spec())
        except RoutingConfigError as exc:
            where = (*prefix, index, *exc.key.split(".")) if exc.key else (*prefix, index)
            errors.append(error_details(where, exc.problem, endpoint.name))
    if errors:
        return None, errors
    return RoutingTable.of(specs), []


_ENDPOINTS = TypeAdapter(list[EndpointConfig])


def build_routing_table(
    raw: Any, *, models: Mapping[str, Collection[str]] | None = None, source: str = "endpoints"
) -> RoutingTable:
    """A raw `endpoints:` list (None for none) validated and compiled on its own, for tools and
    tests; ConfigError with every error at its key path (`endpoints.0.weights`)."""
    try:
        endpoints = _ENDPOINTS.validate_python([] if raw is None else raw)
    except ValidationError as exc:
        raise ConfigError(source, error_lines(exc, ("endpoints",))) from None
    table, errors = compile_endpoints(endpoints, models, prefix=("endpoints",))
    if table is None:
        error = ValidationError.from_exception_data("endpoints", errors)
        raise ConfigError(source, error_lines(error))
    return table
