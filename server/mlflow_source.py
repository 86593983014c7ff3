"""Model versions that live in the MLflow model registry: `models:/<name>/<version>` and
`models:/<name>@<alias>`, looked up in the registry of a tracking server and downloaded once
into a local cache, `<cache_dir>/<name>/<version>/`.

A pinned version never changes in the registry, so one in the cache is served without asking
the registry (the gateway starts with the registry down); an alias can move, so it is always
asked for. A version is downloaded into a temporary folder beside its cache folder and renamed
into place only when complete and checked, so a crash never leaves a cache folder that looks
complete. mlflow is imported only here, inside `resolve`: the gateway needs it only when a
config names a `models:/` source (`pip install 'switchyard[mlflow]'`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import Field

from switchyard.runtimes.errors import ModelLoadError
from switchyard.server.config_base import FilePath, StrictModel

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

MODEL_URI_PREFIX = "models:/"
INSTALL_HINT = "pip install 'switchyard[mlflow]'"
TRACKING_URI_VARIABLE = "MLFLOW_TRACKING_URI"
ONNX_FLAVOR = "onnx"
MLMODEL_FILE = "MLmodel"
# Written into a version's cache folder: what the registry said, for cache hits offline.
CACHE_RECORD_FILE = "switchyard-source.json"

# MLflow's own alias rule: letters, digits, `_` and `-`.
_ALIAS_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_VERSION_PATTERN = re.compile(r"[0-9]+")
_URI_FORMS = "models:/<name>/<version> (a positive integer) or models:/<name>@<alias>"

# Retries of one registry call when the user set none: a few, so that an unreachable registry
# is reported in seconds, not after MLflow's default of minutes of backoff.
_DEFAULT_MAX_RETRIES = 2
_DEFAULT_BACKOFF_FACTOR = 1
# MLflow reads its HTTP settings from the environment at each request: they are set for the
# duration of one resolve, one resolve at a time, so that concurrent ones never see another's.
_ENVIRONMENT_LOCK = threading.Lock()


class MlflowSettings(StrictModel):
    """Where `models:/` sources are looked up and cached."""

    tracking_uri: str | None = Field(
        default=None,
        min_length=1,
        description="The MLflow tracking server (its model registry) of models:/ sources; "
        f"unset: the {TRACKING_URI_VARIABLE} environment variable.",
    )
    cache_dir: FilePath = Field(
        default=Path("~/.cache/switchyard/mlflow"),
        description="Where downloaded model versions are kept, one folder per name and version.",
    )
    timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds one call to the registry may take."
    )


@dataclass(frozen=True)
class ModelUri:
    """A parsed `models:/` URI: a name and either a version or an alias."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if (self.version is None) == (self.alias is None):
            raise ValueError("a model URI has either a version or an alias")

    def __str__(self) -> str:
        if self.version is not None:
            return f"{MODEL_URI_PREFIX}{self.name}/{self.version}"
        return f"{MODEL_URI_PREFIX}{self.name}@{self.alias}"


@dataclass(frozen=True)
class ResolvedModel:
    """A registry model version on local disk, ready for ONNX Runtime."""

    uri: str  # as written
    name: str
    version: int  # the registry's number, also when `uri` names an alias
    path: Path  # the local .onnx file
    source: str  # the registry's source URI of the version (a run's or a logged model's)
    downloaded: bool  # False: served from the cache


def is_model_uri(text: str) -> bool:
    """Whether `text` is meant as a registry source (and not a file path): `models:/...`.
    Such a text that is not a valid URI is an error of parse_model_uri, never a file name."""
    return text.startswith(MODEL_URI_PREFIX)


def parse_model_uri(uri: str) -> ModelUri:
    """`models:/<name>/<version>` or `models:/<name>@<alias>`; ValueError for anything else."""
    if not is_model_uri(uri):
        raise ValueError(f"{uri!r} is not a model registry URI: expected {_URI_FORMS}")
    rest = uri.removeprefix(MODEL_URI_PREFIX)
    if "/" in rest:
        name, _, version_text = rest.partition("/")
        _check_name(uri, name)
        if not _VERSION_PATTERN.fullmatch(version_text) or int(version_text) == 0:
            raise ValueError(
                f"{uri!r}: version {version_text!r} is not a positive integer (stages and "
                f"'latest' are not supported: pin a version or use an alias); expected {_URI_FORMS}"
            )
        return ModelUri(name=name, version=int(version_text))
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        _check_name(uri, name)
        if not _ALIAS_PATTERN.fullmatch(alias):
            raise ValueError(
                f"{uri!r}: alias {alias!r} is not valid (letters, digits, '_' and '-'); "
                f"expected {_URI_FORMS}"
            )
        return ModelUri(name=name, alias=alias)
    raise ValueError(f"{uri!r} names no version or alias: expected {_URI_FORMS}")


def _check_name(uri: str, name: str) -> None:
    # The name is a folder of the cache too: nothing that could leave it.
    if not name or name in {".", ".."} or "@" in name or "\x00" in name or name != name.strip():
        raise ValueError(f"{uri!r}: model name {name!r} is not valid; expected {_URI_FORMS}")


def resolve(uri: str, settings: MlflowSettings) -> ResolvedModel:
    """The local .onnx file of the registry version `uri` names, downloaded if not cached.

    Blocking (registry calls and downloads): run it in a thread. Raises ModelLoadError.
    """
    try:
        model_uri = parse_model_uri(uri)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    cache_root = settings.cache_dir.expanduser()
    if model_uri.version is not None:
        cached = _cached(uri, cache_root, model_uri.name, model_uri.version)
        if cached is not None:
            return cached
    tracking_uri = settings.tracking_uri or os.environ.get(TRACKING_URI_VARIABLE)
    if not tracking_uri:
        raise ModelLoadError(
            f"{uri}: no MLflow tracking URI to look it up: set the mlflow tracking_uri setting "
            f"or the {TRACKING_URI_VARIABLE} environment variable"
        )
    try:
        from mlflow import MlflowClient
    except ImportError as error:
        raise ModelLoadError(
            f"{uri}: model registry sources need mlflow, which is not installed ({error}): "
            f"{INSTALL_HINT}"
        ) from None
    with _registry_environment(settings.timeout_s):
        client = MlflowClient(tracking_uri=tracking_uri)
        version_info = _look_up(client, model_uri, tracking_uri)
        version = int(version_info.version)
        cached = _cached(uri, cache_root, model_uri.name, version)
        if cached is not None:
            return cached
        return _download(uri, model_uri.name, client, version_info, cache_root, tracking_uri)


@contextlib.contextmanager
def _registry_environment(timeout_s: float) -> Iterator[None]:
    # MLflow takes whole seconds; retries and backoff the user set are kept.
    values = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": os.environ.get(
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(_DEFAULT_MAX_RETRIES)
        ),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": os.environ.get(
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", str(_DEFAULT_BACKOFF_FACTOR)
        ),
        # A progress bar on a server's stderr is noise.
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    with _ENVIRONMENT_LOCK:
        previous = {key: os.environ.get(key) for key in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _look_up(client: MlflowClient, model_uri: ModelUri, tracking_uri: str) -> ModelVersion:
    """The registry's version that `model_uri` names; ModelLoadError naming what is missing."""
    from mlflow.exceptions import MlflowException

    try:
        if model_uri.alias is not None:
            version_info = client.get_model_version_by_alias(model_uri.name, model_uri.alias)
        else:
            version_info = client.get_model_version(model_uri.name, str(model_uri.version))
    except MlflowException as error:
        # The registry answers a missing alias with INVALID_PARAMETER_VALUE, a missing model or
        # version with RESOURCE_DOES_NOT_EXIST: which of them is asked for by name.
        if error.error_code not in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            raise _registry_error(model_uri, tracking_uri, error) from None
        raise _missing(client, model_uri, tracking_uri, error) from None
    status = str(version_info.status)
    if status != "READY":
        raise ModelLoadError(
            f"{model_uri}: version {version_info.version} of registered model "
            f"'{model_uri.name}' is not ready in the registry at {tracking_uri} (status {status})"
        )
    return version_info


def _missing(
    client: MlflowClient, model_uri: ModelUri, tracking_uri: str, lookup_error: Exception
) -> ModelLoadError:
    from mlflow.exceptions import MlflowException

    where = f"in the registry at {tracking_uri}"
    try:
        registered = client.get_registered_model(model_uri.name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return ModelLoadError(f"{model_uri}: no registered model '{model_uri.name}' {where}")
        return _registry_error(model_uri, tracking_uri, error)
    if model_uri.version is not None:
        return ModelLoadError(
            f"{model_uri}: registered model '{model_uri.name}' has no version "
            f"{model_uri.version} {where}"
        )
    aliases: dict[str, str] = dict(registered.aliases or {})
    if model_uri.alias in aliases:  # the alias exists: the lookup failed for another reason
        return _registry_error(model_uri, tracking_uri, lookup_error)
    known = ", ".join(f"{alias} -> {aliases[alias]}" for alias in sorted(aliases)) or "none"
    return ModelLoadError(
        f"{model_uri}: registered model '{model_uri.name}' has no alias '{model_uri.alias}' "
        f"{where} (its aliases: {known})"
    )


def _registry_error(label: ModelUri | str, tracking_uri: str, error: Exception) -> ModelLoadError:
    if _is_connection_failure(error):
        return ModelLoadError(
            f"{label}: the MLflow registry at {tracking_uri} is unreachable: {error}"
        )
    return ModelLoadError(f"{label}: the MLflow registry at {tracking_uri} failed: {error}")


def _is_connection_failure(error: BaseException) -> bool:
    # MLflow wraps the HTTP client's connection errors and timeouts (OSErrors) in its own.
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _version_dir(cache_root: Path, name: str, version: int) -> Path:
    return cache_root / name / str(version)


def _cached(uri: str, cache_root: Path, name: str, version: int) -> ResolvedModel | None:
    """The version from the cache, or None when it was never downloaded."""
    version_dir = _version_dir(cache_root, name, version)
    if not version_dir.is_dir():
        return None
    try:
        record = json.loads((version_dir / CACHE_RECORD_FILE).read_text(encoding="utf-8"))
        source = str(record["source"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(
            f"{uri}: the cache folder {version_dir} is damaged ({error}): remove it to "
            "download the version again"
        ) from None
    try:
        path = _onnx_file(uri, version_dir)
    except ModelLoadError as error:
        raise ModelLoadError(
            f"{error} (in the cache folder {version_dir}: remove it to download the version again)"
        ) from None
    return ResolvedModel(uri, name, version, path, source, downloaded=False)


def _download(
    uri: str,
    name: str,
    client: MlflowClient,
    version_info: ModelVersion,
    cache_root: Path,
    tracking_uri: str,
) -> ResolvedModel:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    # `name` is the URI's, as for a pinned version's cache lookup (not the registry's spelling).
    version = int(version_info.version)
    final_dir = _version_dir(cache_root, name, version)
    try:
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        # Beside the final folder (same file system, so the rename is atomic), and never
        # mistaken for a version: versions are digits only.
        temp_dir = Path(
            tempfile.mkdtemp(prefix=f".{version}.partial-", dir=final_dir.parent)
        ).resolve()
    except OSError as error:
        raise ModelLoadError(f"{uri}: cannot create the cache folder: {error}") from None
    try:
        try:
            download_uri = client.get_model_version_download_uri(name, str(version))
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=download_uri,
                dst_path=str(temp_dir / "artifacts"),
                tracking_uri=tracking_uri,
            )
        except MlflowException as error:
            raise _registry_error(uri, tracking_uri, error) from None
        except OSError as error:
            raise ModelLoadError(f"{uri}: downloading version {version} failed: {error}") from None
        downloaded_dir = Path(local)
        if not downloaded_dir.is_dir() or not downloaded_dir.resolve().is_relative_to(temp_dir):
            raise ModelLoadError(
                f"{uri}: version {version}'s artifacts are not a model folder ({download_uri})"
            )
        path_in_download = _onnx_file(uri, downloaded_dir)
        source = str(version_info.source)
        record = {"name": name, "version": version, "source": source}
        (downloaded_dir / CACHE_RECORD_FILE).write_text(json.dumps(record), encoding="utf-8")
        try:
            downloaded_dir.rename(final_dir)
        except OSError as error:
            # Another process completed the same version first: keep its copy.
            if not final_dir.is_dir():
                raise ModelLoadError(
                    f"{uri}: cannot move the download into the cache folder {final_dir}: {error}"
                ) from None
            return ResolvedModel(
                uri, name, version, _onnx_file(uri, final_dir), source, downloaded=False
            )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    path = final_dir / path_in_download.relative_to(downloaded_dir)
    return ResolvedModel(uri, name, version, path, source, downloaded=True)


def _onnx_file(uri: str, model_dir: Path) -> Path:
    """The .onnx file that the onnx flavour of `model_dir`'s MLmodel names."""
    mlmodel_path = model_dir / MLMODEL_FILE
    try:
        mlmodel: Any = yaml.safe_load(mlmodel_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(
            f"{uri}: the version has no {MLMODEL_FILE} file: not an MLflow model"
        ) from None
    except (OSError, yaml.YAMLError) as error:
        raise ModelLoadError(f"{uri}: cannot read {mlmodel_path}: {error}") from None
    flavors = mlmodel.get("flavors") if isinstance(mlmodel, dict) else None
    if not isinstance(flavors, dict):
        raise ModelLoadError(f"{uri}: {mlmodel_path} has no flavors: not an MLflow model")
    onnx_flavor = flavors.get(ONNX_FLAVOR)
    if not isinstance(onnx_flavor, dict):
        names = ", ".join(sorted(str(flavor) for flavor in flavors)) or "none"
        raise ModelLoadError(
            f"{uri}: not an ONNX model: its MLflow flavors are {names}; Switchyard serves the "
            f"{ONNX_FLAVOR} flavor (log the model with mlflow.onnx.log_model)"
        )
    data = onnx_flavor.get("data")
    if not isinstance(data, str) or not data:
        raise ModelLoadError(f"{uri}: the onnx flavor of {mlmodel_path} names no data file")
    path = model_dir / data
    if not path.resolve().is_relative_to(model_dir.resolve()):
        raise ModelLoadError(f"{uri}: the onnx flavor's data file {data!r} is outside the model")
    if not path.is_file():
        raise ModelLoadError(f"{uri}: the onnx flavor's data file {data!r} is missing")
    return path
