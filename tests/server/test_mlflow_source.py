"""models:/ sources resolved against a real MLflow tracking server and its model registry."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow.onnx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
from mlflow import MlflowClient
from pydantic import ValidationError

from loadtests.gateway_process import free_port, start_gateway
from switchyard.runtimes.errors import ModelLoadError
from switchyard.server.mlflow_source import (
    CACHE_RECORD_FILE,
    MlflowSettings,
    ModelUri,
    is_model_uri,
    parse_model_uri,
    resolve,
)
from tests.mlflow_support import (
    MlflowServer,
    publish_logged_model,
    publish_run_artifacts,
    scaling_model,
)
from tests.server.model_repository_support import AUTH, TOKEN

ROWS = np.array([[1.0, -2.0], [0.5, 4.0]], dtype=np.float32)
# Version -> the factor its model multiplies by.
SCALES = {1: 2.0, 2: 3.0}


@dataclass(frozen=True)
class Registry:
    server: MlflowServer
    client: MlflowClient


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """`scaler` versions 1 (a logged model) and 2 (run artifacts), alias champion -> 1, and
    `pickled` version 1, a model without the onnx flavor."""
    workdir = tmp_path_factory.mktemp("mlflow")
    server = MlflowServer(workdir / "server")
    (workdir / "server").mkdir()
    server.start()
    try:
        client = MlflowClient(tracking_uri=server.url)
        for version, scale in SCALES.items():
            model_dir = workdir / f"scaler-{version}"
            # Requirements given: no inference of the environment (slow, beside the point).
            mlflow.onnx.save_model(scaling_model(scale), model_dir, pip_requirements=["onnx"])
            publish = publish_logged_model if version == 1 else publish_run_artifacts
            assert publish(client, "scaler", model_dir) == version
        client.set_registered_model_alias("scaler", "champion", "1")
        pickled_dir = workdir / "pickled"
        pickled_dir.mkdir()
        (pickled_dir / "MLmodel").write_text(
            "flavors:\n  sklearn:\n    pickled_model: model.pkl\n"
            "  python_function:\n    loader_module: mlflow.sklearn\n"
        )
        (pickled_dir / "model.pkl").write_bytes(b"not a model")
        assert publish_run_artifacts(client, "pickled", pickled_dir) == 1
        yield Registry(server, client)
    finally:
        server.stop()


@pytest.fixture
def registry(published: Registry) -> Registry:
    """The module's registry, started again if a test stopped it (the last test does)."""
    if not published.server.running:
        published.server.start()
    return published


@pytest.fixture
def settings(registry: Registry, tmp_path: Path) -> MlflowSettings:
    return MlflowSettings(tracking_uri=registry.server.url, cache_dir=tmp_path / "cache")


def run_model(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"x": ROWS})
    return np.asarray(outputs[0])


def test_a_pinned_version_downloads_into_the_cache_and_runs(settings: MlflowSettings) -> None:
    for version, scale in SCALES.items():
        resolved = resolve(f"models:/scaler/{version}", settings)
        assert resolved.downloaded
        assert (resolved.name, resolved.version) == ("scaler", version)
        assert resolved.path == settings.cache_dir / "scaler" / str(version) / "model.onnx"
        np.testing.assert_array_equal(run_model(resolved.path), ROWS * scale)
    # Nothing else is left in the cache: no temporary folders.
    assert sorted(p.name for p in (settings.cache_dir / "scaler").iterdir()) == ["1", "2"]


def test_the_source_is_the_registrys(settings: MlflowSettings, registry: Registry) -> None:
    for version in SCALES:
        expected = registry.client.get_model_version("scaler", str(version)).source
        assert resolve(f"models:/scaler/{version}", settings).source == expected
    assert resolve("models:/scaler/1", settings).source.startswith("models:/m-")  # logged model


def test_an_alias_resolves_to_its_version(settings: MlflowSettings) -> None:
    resolved = resolve("models:/scaler@champion", settings)
    assert (resolved.uri, resolved.version, resolved.downloaded) == (
        "models:/scaler@champion",
        1,
        True,
    )
    np.testing.assert_array_equal(run_model(resolved.path), ROWS * SCALES[1])
    # The version it names is cached like a pinned one: the next resolve asks, not downloads.
    again = resolve("models:/scaler@champion", settings)
    assert (again.version, again.downloaded, again.path) == (1, False, resolved.path)


def test_a_moved_alias_resolves_to_the_new_version(
    settings: MlflowSettings, registry: Registry
) -> None:
    registry.client.set_registered_model_alias("scaler", "canary", "1")
    try:
        assert resolve("models:/scaler@canary", settings).version == 1
        registry.client.set_registered_model_alias("scaler", "canary", "2")
        moved = resolve("models:/scaler@canary", settings)
        assert (moved.version, moved.downloaded) == (2, True)
        np.testing.assert_array_equal(run_model(moved.path), ROWS * SCALES[2])
    finally:
        registry.client.delete_registered_model_alias("scaler", "canary")


def test_an_unreachable_registry_is_named_in_seconds(tmp_path: Path) -> None:
    dead_uri = f"http://127.0.0.1:{free_port()}"
    settings = MlflowSettings(tracking_uri=dead_uri, cache_dir=tmp_path)
    started_s = time.monotonic()
    with pytest.raises(
        ModelLoadError,
        match=rf"^models:/scaler/1: the MLflow registry at {dead_uri} is unreachable",
    ):
        resolve("models:/scaler/1", settings)
    # A few quick retries, not MLflow's default of minutes of backoff.
    assert time.monotonic() - started_s < 15


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/nosuch/1", r"no registered model 'nosuch' in the registry at http://"),
        ("models:/nosuch@champion", r"no registered model 'nosuch' in the registry at http://"),
        ("models:/scaler/7", r"registered model 'scaler' has no version 7 in the registry at"),
        (
            "models:/scaler@nosuch",
            r"registered model 'scaler' has no alias 'nosuch' in the registry at \S+ "
            r"\(its aliases: champion -> 1\)$",
        ),
    ],
)
def test_what_the_registry_lacks_is_named(settings: MlflowSettings, uri: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=f"^{uri}: {message}"):
        resolve(uri, settings)
    assert not settings.cache_dir.exists() or not any(settings.cache_dir.rglob("*.onnx"))


def test_a_model_without_the_onnx_flavor_is_refused_and_not_cached(
    settings: MlflowSettings,
) -> None:
    with pytest.raises(
        ModelLoadError,
        match=r"^models:/pickled/1: not an ONNX model: its MLflow flavors are "
        r"python_function, sklearn; ",
    ):
        resolve("models:/pickled/1", settings)
    # The download was checked before it was renamed into place, and removed.
    assert list((settings.cache_dir / "pickled").iterdir()) == []


@pytest.mark.parametrize(
    ("removed", "message"),
    [
        (CACHE_RECORD_FILE, r"the cache folder \S+/scaler/1 is damaged .*: remove it"),
        ("model.onnx", r"data file 'model.onnx' is missing \(in the cache folder \S+: remove it"),
    ],
)
def test_a_damaged_cache_folder_is_named(
    settings: MlflowSettings, removed: str, message: str
) -> None:
    resolved = resolve("models:/scaler/1", settings)
    (resolved.path.parent / removed).unlink()
    with pytest.raises(ModelLoadError, match=message):
        resolve("models:/scaler/1", settings)


def test_no_tracking_uri_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ModelLoadError, match="set the mlflow tracking_uri setting or the "):
        resolve("models:/scaler/1", MlflowSettings(cache_dir=tmp_path))


def test_the_tracking_uri_variable_is_the_default(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.server.url)
    assert resolve("models:/scaler/1", MlflowSettings(cache_dir=tmp_path)).version == 1


def test_without_mlflow_the_install_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an import of a missing module sees
    settings = MlflowSettings(tracking_uri="http://127.0.0.1:1", cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match=r"need mlflow.*pip install 'switchyard\[mlflow\]'"):
        resolve("models:/scaler/1", settings)


def test_the_module_does_not_import_mlflow() -> None:
    check = "import sys, switchyard.server.mlflow_source; assert 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/scaler/1", ModelUri("scaler", version=1)),
        ("models:/scaler/12", ModelUri("scaler", version=12)),
        ("models:/my model.v2/3", ModelUri("my model.v2", version=3)),
        ("models:/scaler@champion", ModelUri("scaler", alias="champion")),
        ("models:/scaler@blue-2_b", ModelUri("scaler", alias="blue-2_b")),
    ],
)
def test_uris_parse(uri: str, expected: ModelUri) -> None:
    assert is_model_uri(uri)
    assert parse_model_uri(uri) == expected
    assert str(expected) == uri


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("model.onnx", "is not a model registry URI"),
        ("runs:/abc/model", "is not a model registry URI"),
        ("models:/scaler", "names no version or alias"),
        ("models:/scaler/0", "version '0' is not a positive integer"),
        ("models:/scaler/-1", "version '-1' is not a positive integer"),
        ("models:/scaler/Production", "stages and 'latest' are not supported"),
        ("models:/scaler/latest", "stages and 'latest' are not supported"),
        ("models:/scaler/1/model.onnx", "version '1/model.onnx' is not a positive integer"),
        ("models:/scaler@", "alias '' is not valid"),
        ("models:/scaler@a.b", "alias 'a.b' is not valid"),
        ("models:/@champion", "model name '' is not valid"),
        ("models:/../1", r"model name '\.\.' is not valid"),
        ("models:/a@b/1", "model name 'a@b' is not valid"),
        ("models:/ scaler/1", "model name ' scaler' is not valid"),
    ],
)
def test_bad_uris_are_refused(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_model_uri(uri)
    assert "models:/<name>/<version>" in str(raised.value)  # the forms accepted


def test_resolve_refuses_a_bad_uri_as_a_load_error(settings: MlflowSettings) -> None:
    with pytest.raises(ModelLoadError, match="stages and 'latest' are not supported"):
        resolve("models:/scaler/Production", settings)


def test_settings() -> None:
    settings = MlflowSettings.model_validate({"cache_dir": "/var/cache/models", "timeout_s": 5})
    assert (settings.cache_dir, settings.timeout_s, settings.tracking_uri) == (
        Path("/var/cache/models"),
        5.0,
        None,
    )
    assert MlflowSettings().cache_dir == Path("~/.cache/switchyard/mlflow")
    for bad in ({"timeout_s": 0}, {"tracking_uri": ""}, {"cache": "/tmp"}, {"timeout_s": "5"}):
        with pytest.raises(ValidationError):
            MlflowSettings.model_validate(bad)


def test_a_cached_pinned_version_needs_no_server(
    settings: MlflowSettings, registry: Registry
) -> None:
    # Last in the file: it stops the server, and a later test would pay for a restart.
    first = resolve("models:/scaler/2", settings)
    assert resolve("models:/scaler@champion", settings).version == 1  # now cached too
    registry.server.stop()
    cached = resolve("models:/scaler/2", settings)
    assert cached == dataclasses.replace(first, downloaded=False)
    np.testing.assert_array_equal(run_model(cached.path), ROWS * SCALES[2])
    # An alias is always asked for, even when the version it named last is cached.
    with pytest.raises(ModelLoadError, match=f"registry at {settings.tracking_uri} is unreach"):
        resolve("models:/scaler@champion", settings)


def test_a_gateway_serves_registry_versions_and_follows_a_moved_alias(
    registry: Registry, tmp_path: Path
) -> None:
    """The whole path: a config whose versions are registry URIs, served by a real gateway;
    the alias moved in the registry, then a repository-API load picks up its new version."""
    config = {
        "admin": {"token": TOKEN},
        "mlflow": {"tracking_uri": registry.server.url, "cache_dir": str(tmp_path / "cache")},
        "models": [
            {
                "name": "scaler",
                "versions": [
                    {"version": "pinned", "source": "models:/scaler/2"},
                    {"version": "champion", "source": "models:/scaler@champion"},
                ],
            }
        ],
    }
    registry.client.set_registered_model_alias("scaler", "champion", "1")
    gateway = start_gateway(config, tmp_path)
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)

    def served(version: str) -> np.ndarray:
        tensor = triton_grpc.InferInput("x", list(ROWS.shape), "FP32")
        tensor.set_data_from_numpy(ROWS)
        return np.asarray(client.infer("scaler", [tensor], model_version=version).as_numpy("y"))

    try:
        np.testing.assert_allclose(served("pinned"), ROWS * SCALES[2])
        np.testing.assert_allclose(served("champion"), ROWS * SCALES[1])
        registry.client.set_registered_model_alias("scaler", "champion", "2")
        np.testing.assert_allclose(served("champion"), ROWS * SCALES[1])  # until asked to load
        client.load_model("scaler", headers=AUTH)
        np.testing.assert_allclose(served("champion"), ROWS * SCALES[2])
        np.testing.assert_allclose(served("pinned"), ROWS * SCALES[2])
    finally:
        registry.client.set_registered_model_alias("scaler", "champion", "1")
        assert gateway.stop() == 0, gateway.log()
