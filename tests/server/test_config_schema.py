"""The one config schema: strict types, key paths in errors, old-unit keys, duplicate keys,
the endpoints compile step, and a description for every field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from switchyard.server.config import ConfigError, SwitchyardConfig, parse_config, routing_table
from switchyard.server.config_cli import config_json_schema
from switchyard.server.config_yaml import load_yaml


def minimal(**sections: Any) -> dict[str, Any]:
    return {"models": [{"name": "m", "versions": [{"version": "1", "path": "m.onnx"}]}], **sections}


def with_model(**settings: Any) -> dict[str, Any]:
    raw = minimal()
    raw["models"][0].update(settings)
    return raw


def errors_of(raw: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, Path("."), "bad.yaml", env={})
    assert "bad.yaml" in str(caught.value)
    return list(caught.value.errors)


ENDPOINT = {"name": "recs", "variants": {"a": {"model": "m", "version": "1"}}}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            minimal(server={"http_port": "8000"}),
            "server.http_port: Input should be a valid integer",
        ),
        (minimal(server={"shutdown_grace_s": "5"}), "server.shutdown_grace_s: Input should be a"),
        (minimal(routing={"rollout_tick_s": True}), "routing.rollout_tick_s: Input should be a"),
        (minimal(admin={"token": 1234567890123456}), "admin.token: Input should be a valid string"),
        (minimal(recommend={"max_candidates": 1.5}), "recommend.max_candidates: Input should be"),
        (with_model(runtime_options={"warmup": "yes"}), "models.0.runtime_options.warmup: Input"),
        (with_model(batching={"max_batch_size": "8"}), "models.0.batching.max_batch_size: Input"),
        (
            with_model(runtime="triton", triton={"url": "t:8001", "timeout_s": "1"}),
            "models.0.triton.timeout_s: Input should be a valid number",
        ),
        (with_model(ray={"num_cpus": "1"}), "models.0.ray.num_cpus: Input should be a valid"),
        (
            with_model(autoscaling={"target_latency_s": 0.1, "max_replicas": "4"}),
            "models.0.autoscaling.max_replicas: Input should be a valid integer",
        ),
        (
            with_model(autoscaling={"target_latency_s": 0.1, "min_replicas": 4, "max_replicas": 2}),
            "models.0.autoscaling.max_replicas: must be >= min_replicas (4)",
        ),
        (with_model(autoscaling={"target_latency": 0.1}), "models.0.autoscaling.target_latency:"),
        (
            minimal(features={"store": {"kind": "redis", "pool_size": "4"}}),
            "features.store.pool_size: Input should be a valid integer",
        ),
        (
            minimal(endpoints=[{**ENDPOINT, "shadow": {"variants": ["a"], "fraction": "0.1"}}]),
            "endpoints.0.shadow.fraction: Input should be a valid number",
        ),
        (
            minimal(endpoints=[{**ENDPOINT, "rollout": {"stable": "a", "canary": "b"}}]),
            "endpoints.0.rollout.canary: unknown variant 'b' (variants: a)",
        ),
        (
            minimal(endpoints=[{**ENDPOINT, "weights": {"a": "1"}}]),
            "endpoints.0.weights.a: Input should be a valid number",
        ),
    ],
)
def test_every_section_is_strict_and_names_the_key_path(raw: Any, expected: str) -> None:
    assert any(line.startswith(expected) for line in errors_of(raw)), errors_of(raw)


def test_integers_are_taken_for_floats() -> None:
    raw = minimal(server={"shutdown_grace_s": 3}, features={"store": {"kind": "redis"}})
    raw["models"][0]["batching"] = {"max_queue_delay_s": 1}
    config = parse_config(raw, Path("."), "x.yaml", env={})
    assert config.server.shutdown_grace_s == 3.0
    assert config.models[0].batching.to_options(8).max_queue_delay_us == 1_000_000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            with_model(batching={"max_queue_delay_us": 500}),
            "models.0.batching.max_queue_delay_us: renamed to max_queue_delay_s (seconds)",
        ),
        (
            minimal(features={"store": {"kind": "redis", "timeout_ms": 50}}),
            "features.store.timeout_ms: renamed to timeout_s (seconds)",
        ),
        (
            minimal(features={"store": {"kind": "redis", "breaker": {"open_ms": 1000}}}),
            "features.store.breaker.open_ms: renamed to open_s (seconds)",
        ),
    ],
)
def test_old_unit_keys_name_their_new_key(raw: Any, expected: str) -> None:
    assert errors_of(raw) == [expected]


def test_durations_in_seconds_compile_to_the_specs_units() -> None:
    raw = with_model(batching={"max_queue_delay_s": 0.0025})
    raw["features"] = {"store": {"kind": "redis", "timeout_s": 0.2, "breaker": {"open_s": 1.5}}}
    config = parse_config(raw, Path("."), "x.yaml", env={})
    assert config.models[0].batching.to_options(8).max_queue_delay_us == 2500
    store = config.features.store
    assert store.kind == "redis" and (store.timeout_s, store.breaker.open_s) == (0.2, 1.5)


def test_endpoints_compile_once_into_the_routing_table() -> None:
    raw = minimal(
        endpoints=[
            {
                "name": "recs",
                "variants": {"a": {"model": "m", "version": 1}, "b": {"model": "m"}},
                "weights": {"a": 9, "b": 1},
                "routing_key": {"header": "X-User-Id"},
                "rollout": {"stable": "a", "canary": "b", "steps_percent": [10, 100]},
            },
            {"name": "plain", "variants": {"only": {"model": "m"}}, "routing_key": None},
        ]
    )
    config = parse_config(raw, Path("."), "x.yaml", env={})
    table = routing_table(config)
    assert table is routing_table(config)  # compiled once, at validation
    recs = table.endpoint("recs")
    assert recs.variants["a"].version == "1" and recs.routing_key.header == "x-user-id"
    assert recs.rollout is not None and recs.rollout.steps_percent == (10.0, 100.0)
    plain = table.endpoint("plain")
    assert (plain.routing_key.parameter, plain.routing_key.header) == (None, None)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (
            {"name": "recs", "variants": {"a": {"model": "x"}}},
            "endpoints.0.variants.a.model: unknown model 'x' (models: m)",
        ),
        (
            {"name": "recs", "variants": {"a": {"model": "m", "version": 2}}},
            "endpoints.0.variants.a.version: model 'm' has no version '2' (versions: 1)",
        ),
        (
            {"name": "m", "variants": {"a": {"model": "m"}}},
            "endpoints.0.name: 'm' is also a model name; an endpoint needs its own",
        ),
        (
            {**ENDPOINT, "routing_key": {"header": "x-v"}, "override": {"header": "X-V"}},
            "endpoints.0.override.header: 'x-v' is also the routing key's header",
        ),
        (
            {**ENDPOINT, "shadow": {"variants": ["a"], "fraction": 0.5}},
            "endpoints.0.weights: required when every variant is a shadow",
        ),
        ({**ENDPOINT, "colour": "red"}, "endpoints.0.colour: Extra inputs are not permitted"),
    ],
)
def test_endpoint_cross_checks_name_the_key_path(endpoint: Any, expected: str) -> None:
    assert errors_of(minimal(endpoints=[endpoint])) == [expected]


def test_repeated_endpoint_names_are_refused() -> None:
    assert errors_of(minimal(endpoints=[ENDPOINT, ENDPOINT])) == [
        "endpoints.1.name: endpoint name repeats (endpoints.0 has it)"
    ]


def test_duplicate_keys_are_refused_at_every_level() -> None:
    text = (
        "models:\n"
        "  - name: m\n"
        "    versions: [{version: '1', path: m.onnx, path: n.onnx}]\n"
        "    batching:\n"
        "      max_batch_size: 8\n"
        "      max_batch_size: 16\n"
        "endpoints: []\n"
        "endpoints: []\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_yaml(text, "dup.yaml")
    assert caught.value.errors == (
        "models.0.versions.0.path: duplicate key (line 3; first on line 3)",
        "models.0.batching.max_batch_size: duplicate key (line 6; first on line 5)",
        "endpoints: duplicate key (line 8; first on line 7)",
    )
    assert load_yaml("a: {b: 1}\nc: [1, 2]\n", "ok.yaml") == {"a": {"b": 1}, "c": [1, 2]}


def test_every_error_is_reported_at_once() -> None:
    raw = minimal(server={"http_port": "x", "grpc_prot": 1}, routing={"rollout_tick_s": 0})
    assert [line.split(":")[0] for line in errors_of(raw)] == [
        "server.http_port",
        "server.grpc_prot",
        "routing.rollout_tick_s",
    ]


def _properties_without_description(schema: dict[str, Any]) -> list[str]:
    missing = []
    for name, definition in [("SwitchyardConfig", schema), *schema["$defs"].items()]:
        for key, prop in definition.get("properties", {}).items():
            if not prop.get("description"):
                missing.append(f"{name}.{key}")
    return missing


def test_every_field_has_a_description() -> None:
    schema = config_json_schema()
    assert schema["$defs"]  # the walk sees every section's model
    assert _properties_without_description(schema) == []
    assert schema["properties"].keys() == SwitchyardConfig.model_fields.keys()
