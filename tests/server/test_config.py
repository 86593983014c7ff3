from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from switchyard.demo.paths import artifacts_dir
from switchyard.server.config import DEFAULT_CONFIG_PATH, ConfigError, load_config, parse_config


def minimal(**overrides: Any) -> dict[str, Any]:
    return {
        "models": [{"name": "m", "versions": [{"version": "1", "path": "m.onnx"}]}],
        **overrides,
    }


def test_embedded_default_config_is_valid() -> None:
    config = load_config(DEFAULT_CONFIG_PATH, env={})
    assert [model.name for model in config.models] == ["ranker"]
    assert (config.server.http_port, config.server.grpc_port, config.server.metrics_port) == (
        8000,
        8001,
        8002,
    )
    assert config.models[0].versions[0].path == artifacts_dir() / "ranker.onnx"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = parse_config(minimal(), tmp_path, "x.yaml", env={})
    assert config.models[0].versions[0].path == tmp_path / "m.onnx"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (minimal(serverr={}), "serverr"),
        (minimal(server={"http_prot": 1}), "server.http_prot"),
        (minimal(server={"http_port": 70000}), "server.http_port"),
        (minimal(server={"log_level": "loud"}), "server.log_level"),
        (
            {"models": [{"name": "m", "versions": [{"version": "1", "path": "x", "extra": 1}]}]},
            "models.0.versions.0.extra",
        ),
        ({"models": [{"name": "m", "versions": []}]}, "models.0.versions"),
        (
            {
                "models": [
                    {"name": "m", "runtime": "tf", "versions": [{"version": "1", "path": "x"}]}
                ]
            },
            "models.0.runtime",
        ),
        (
            {
                "models": [
                    {
                        "name": "m",
                        "versions": [{"version": "1", "path": "x"}],
                        "runtime_options": {"threads": 2},
                    }
                ]
            },
            "models.0.runtime_options.threads",
        ),
        ({"models": []}, "models"),
        ({}, "models"),
    ],
)
def test_errors_name_the_offending_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(raw, Path("."), "bad.yaml", env={})
    assert f"  {key}:" in str(error.value)
    assert "bad.yaml" in str(error.value)


def test_repeated_names_and_unknown_default_version() -> None:
    repeated = {"models": [minimal()["models"][0], minimal()["models"][0]]}
    with pytest.raises(ConfigError, match="model names repeat"):
        parse_config(repeated, Path("."), "x.yaml", env={})
    versions = [{"version": "1", "path": "a"}, {"version": "1", "path": "b"}]
    with pytest.raises(ConfigError, match="versions of model 'm' repeat"):
        parse_config({"models": [{"name": "m", "versions": versions}]}, Path("."), "x.yaml", env={})
    bad_default = {"models": [{"name": "m", "versions": versions[:1], "default_version": "2"}]}
    with pytest.raises(ConfigError, match="default_version '2'"):
        parse_config(bad_default, Path("."), "x.yaml", env={})


def test_environment_overrides_server_settings() -> None:
    env = {"SWITCHYARD_HTTP_PORT": "9000", "SWITCHYARD_LOG_LEVEL": "debug"}
    config = parse_config(minimal(server={"http_port": 8500}), Path("."), "x.yaml", env=env)
    assert config.server.http_port == 9000
    assert config.server.log_level == "debug"
    with pytest.raises(ConfigError, match="server.grpc_port"):
        parse_config(minimal(), Path("."), "x.yaml", env={"SWITCHYARD_GRPC_PORT": "many"})


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(scalar)
