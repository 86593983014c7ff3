"""The config's `endpoints:` section: plain data in, a validated RoutingTable out, and back.

Schema (a list of endpoints; only `name` and `variants` are required):

    endpoints:
      - name: recs                          # what callers address
        variants:                           # variant name -> the model version serving it
          stable: {model: ranker, version: "1"}
          canary: {model: ranker, version: "2"}
          next:   {model: ranker-next}      # no version: the model's default version
        weights: {stable: 95, canary: 5}    # relative; unlisted variants get 0. Default:
                                            # 1 for every variant that is not a shadow
        routing_key:                        # sticky key; null turns a source (or both) off
          parameter: user_id                # request parameter (default routing_key)
          header: x-user-id                 # header / gRPC metadata (default
                                            # x-switchyard-routing-key); parameter wins
        override:
          allowed: true                     # callers may name a variant (default true)
          parameter: variant                # (default variant)
          header: x-switchyard-variant      # (default x-switchyard-variant)
        shadow:
          variants: [next]
          fraction: 0.1                     # of requests, in [0, 1]
          max_concurrency: 8                # shadow calls at once; more are dropped
        rollout:                            # progressive canary, see RolloutPlan
          stable: stable
          canary: canary
          steps_percent: [5, 25, 50, 100]
          step_interval_s: 300
          min_requests: 100
          max_error_rate: 0.01              # every check is optional
          max_error_rate_increase: 0.005
          max_p95_latency_s: 0.2
          max_p95_latency_ratio: 1.2
          max_p95_latency_increase_s: 0.05

Unknown keys are errors, and every error names its key (`endpoints.recs.shadow.fraction`,
or `endpoints.0` before the name is known). Validation stops at the first error.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from switchyard.router.endpoint import (
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

# The same names the models section allows; header names fit gRPC metadata keys too.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")

_ENDPOINT_KEYS = ("name", "variants", "weights", "routing_key", "override", "shadow", "rollout")
_VARIANT_KEYS = ("model", "version")
_ROUTING_KEY_KEYS = ("parameter", "header")
_OVERRIDE_KEYS = ("allowed", "parameter", "header")
_SHADOW_KEYS = ("variants", "fraction", "max_concurrency")
_ROLLOUT_NUMBER_KEYS = (
    "step_interval_s",
    "max_error_rate",
    "max_error_rate_increase",
    "max_p95_latency_s",
    "max_p95_latency_ratio",
    "max_p95_latency_increase_s",
)
_ROLLOUT_KEYS = ("stable", "canary", "steps_percent", "min_requests", *_ROLLOUT_NUMBER_KEYS)


def build_routing_table(
    raw: Any, *, models: Mapping[str, Collection[str]] | None = None
) -> RoutingTable:
    """Validate the `endpoints:` section (None for none) into a RoutingTable.

    `models` maps each served model to its versions; when given, every variant must name one
    of them. Raises RoutingConfigError (an InvalidArgument) naming the offending key.
    """
    if raw is None:
        return RoutingTable({})
    if not isinstance(raw, list):
        raise RoutingConfigError("endpoints", "must be a list of endpoints")
    specs = []
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"endpoints.{name}" if isinstance(name, str) and name else f"endpoints.{index}"
        try:
            specs.append(parse_endpoint(item, models=models))
        except RoutingConfigError as exc:
            raise exc.within(where) from None
    return RoutingTable.of(specs)


def parse_endpoint(
    raw: Any, *, models: Mapping[str, Collection[str]] | None = None
) -> EndpointSpec:
    """One endpoint; error keys are relative to it (`weights.canary`)."""
    raw = _mapping(raw, "", _ENDPOINT_KEYS)
    name = _name(raw.get("name"), "name")
    variants = {
        variant: _variant(variant, value, f"variants.{variant}", models)
        for variant, value in _mapping(raw.get("variants"), "variants").items()
    }
    if not variants:
        raise RoutingConfigError("variants", "at least one variant is required")
    shadow = _shadow(raw["shadow"]) if raw.get("shadow") is not None else None
    if raw.get("weights") is None:
        shadowed = set(shadow.variants) if shadow else set()
        weights: dict[str, Any] = {v: 1.0 for v in variants if v not in shadowed}
        if not weights:
            raise RoutingConfigError("weights", "required when every variant is a shadow")
    else:
        weights = _mapping(raw["weights"], "weights")
    routing_key = _routing_key(raw["routing_key"]) if "routing_key" in raw else RoutingKeySpec()
    override = _override(raw.get("override") or {})
    for source in ("parameter", "header"):
        key_source, override_source = getattr(routing_key, source), getattr(override, source)
        if key_source is not None and key_source == override_source:
            raise RoutingConfigError(
                f"override.{source}", f"'{key_source}' is also the routing key's {source}"
            )
    rollout = _rollout(raw["rollout"]) if raw.get("rollout") is not None else None
    return EndpointSpec(
        name=name,
        variants=variants,
        weights=weights,
        routing_key=routing_key,
        override=override,
        shadow=shadow,
        rollout=rollout,
    )


def table_to_config(table: RoutingTable) -> list[dict[str, Any]]:
    """The `endpoints:` section that builds `table` again, in endpoint name order."""
    return [endpoint_to_config(table.endpoints[name]) for name in sorted(table.endpoints)]


def endpoint_to_config(spec: EndpointSpec) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": spec.name,
        "variants": {
            name: {"model": target.model}
            | ({"version": target.version} if target.version is not None else {})
            for name, target in spec.variants.items()
        },
        "weights": dict(spec.weights),
        "routing_key": {"parameter": spec.routing_key.parameter, "header": spec.routing_key.header},
        "override": {
            "allowed": spec.override.allowed,
            "parameter": spec.override.parameter,
            "header": spec.override.header,
        },
    }
    if spec.shadow is not None:
        config["shadow"] = {
            "variants": list(spec.shadow.variants),
            "fraction": spec.shadow.fraction,
            "max_concurrency": spec.shadow.max_concurrency,
        }
    if spec.rollout is not None:
        plan = spec.rollout
        # Unset checks are left out, as they would be written by hand.
        rollout = {key: getattr(plan, key) for key in _ROLLOUT_KEYS}
        rollout["steps_percent"] = list(plan.steps_percent)
        config["rollout"] = {key: value for key, value in rollout.items() if value is not None}
    return config


def _variant(
    name: str, raw: Any, key: str, models: Mapping[str, Collection[str]] | None
) -> VariantTarget:
    _name(name, key)
    raw = _mapping(raw, key, _VARIANT_KEYS)
    model = _name(raw.get("model"), f"{key}.model")
    version = raw.get("version")
    # YAML reads `version: 2` as an int; versions are names, so take it as "2".
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if version is not None:
        version = _name(version, f"{key}.version")
    if models is not None:
        if model not in models:
            known = ", ".join(sorted(models)) or "none"
            raise RoutingConfigError(f"{key}.model", f"unknown model '{model}' (models: {known})")
        if version is not None and version not in models[model]:
            known = ", ".join(models[model])
            raise RoutingConfigError(
                f"{key}.version", f"model '{model}' has no version '{version}' (versions: {known})"
            )
    return VariantTarget(name=name, model=model, version=version)


def _routing_key(raw: Any) -> RoutingKeySpec:
    if raw is None:
        return RoutingKeySpec(parameter=None, header=None)
    raw = _mapping(raw, "routing_key", _ROUTING_KEY_KEYS)
    defaults = RoutingKeySpec()
    return RoutingKeySpec(
        parameter=_source(raw, "parameter", "routing_key", defaults.parameter),
        header=_header(raw, "routing_key", defaults.header),
    )


def _override(raw: Any) -> OverrideSpec:
    raw = _mapping(raw, "override", _OVERRIDE_KEYS)
    allowed = raw.get("allowed", True)
    if not isinstance(allowed, bool):
        raise RoutingConfigError("override.allowed", f"must be true or false, got {allowed!r}")
    defaults = OverrideSpec()
    return OverrideSpec(
        allowed=allowed,
        parameter=_source(raw, "parameter", "override", defaults.parameter),
        header=_header(raw, "override", defaults.header),
    )


def _shadow(raw: Any) -> ShadowSpec:
    raw = _mapping(raw, "shadow", _SHADOW_KEYS)
    names = raw.get("variants")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RoutingConfigError("shadow.variants", "must be a list of variant names")
    fraction = _number(raw.get("fraction"), "shadow.fraction")
    max_concurrency = _integer(
        raw.get("max_concurrency", DEFAULT_SHADOW_MAX_CONCURRENCY), "shadow.max_concurrency"
    )
    try:
        return ShadowSpec(tuple(names), fraction, max_concurrency)
    except RoutingConfigError as exc:
        raise exc.within("shadow") from None


def _rollout(raw: Any) -> RolloutPlan:
    raw = _mapping(raw, "rollout", _ROLLOUT_KEYS)
    fields: dict[str, Any] = {
        "stable": _name(raw.get("stable"), "rollout.stable"),
        "canary": _name(raw.get("canary"), "rollout.canary"),
    }
    if "steps_percent" in raw:
        steps = raw["steps_percent"]
        if not isinstance(steps, list):
            raise RoutingConfigError("rollout.steps_percent", "must be a list of percentages")
        fields["steps_percent"] = tuple(
            _number(step, f"rollout.steps_percent.{i}") for i, step in enumerate(steps)
        )
    if "min_requests" in raw:
        fields["min_requests"] = _integer(raw["min_requests"], "rollout.min_requests")
    for key in _ROLLOUT_NUMBER_KEYS:
        if raw.get(key) is not None:
            fields[key] = _number(raw[key], f"rollout.{key}")
    try:
        return RolloutPlan(**fields)
    except RoutingConfigError as exc:
        raise exc.within("rollout") from None


def _mapping(raw: Any, key: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    if raw is None:
        raise RoutingConfigError(key, "is required")
    if not isinstance(raw, dict):
        raise RoutingConfigError(key, f"must be a mapping, got {type(raw).__name__}")
    for name in raw:
        if not isinstance(name, str):
            raise RoutingConfigError(key, f"keys must be strings, got {name!r}")
        if allowed is not None and name not in allowed:
            where = f"{key}.{name}" if key else name
            raise RoutingConfigError(where, f"unknown key (expected one of: {', '.join(allowed)})")
    return raw


def _name(raw: Any, key: str) -> str:
    if raw is None:
        raise RoutingConfigError(key, "is required")
    if not isinstance(raw, str) or not NAME_PATTERN.match(raw):
        raise RoutingConfigError(key, f"must be a name of letters, digits, '_', '.', '-': {raw!r}")
    return raw


def _source(raw: dict[str, Any], field: str, section: str, default: str | None) -> str | None:
    value = raw.get(field, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise RoutingConfigError(f"{section}.{field}", "must be a non-empty string or null")
    return value


def _header(raw: dict[str, Any], section: str, default: str | None) -> str | None:
    value = raw.get("header", default)
    if value is None:
        return None
    _name(value, f"{section}.header")
    # HTTP headers are case-insensitive and gRPC metadata keys lowercase: keep one form.
    return value.lower()


def _number(raw: Any, key: str) -> float:
    if raw is None:
        raise RoutingConfigError(key, "is required")
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise RoutingConfigError(key, f"must be a number, got {raw!r}")
    return float(raw)


def _integer(raw: Any, key: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RoutingConfigError(key, f"must be an integer, got {raw!r}")
    return raw
