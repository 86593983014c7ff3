"""The loaded models: one runtime per configured model version."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from runtimes.base import ModelSignature, Runtime
from runtimes.errors import ModelLoadError, NotFound
from runtimes.ort_runtime import OnnxRuntimeModel
from server.config import ModelConfig, ModelVersionConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    name: str
    version: str
    signature: ModelSignature
    runtime: Runtime

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


def create_runtime(model: ModelConfig, version: ModelVersionConfig) -> Runtime:
    """The runtime named by the config (one runtime kind so far: onnxruntime)."""
    return OnnxRuntimeModel(
        version.path, model.runtime_options.to_runtime_options(), f"{model.name}:{version.version}"
    )


class ModelRepository:
    """Loads every configured model version at start and looks them up by name and version."""

    def __init__(self, models: list[ModelConfig]) -> None:
        self._configs = {model.name: model for model in models}
        self._loaded: dict[tuple[str, str], LoadedModel] = {}

    def load_all(self) -> None:
        """Load every version; raises one ModelLoadError listing every model that failed."""
        failures = []
        for model in self._configs.values():
            for version in model.versions:
                runtime = create_runtime(model, version)
                try:
                    signature = runtime.load()
                except ModelLoadError as exc:
                    runtime.close()
                    failures.append(str(exc))
                    continue
                loaded = LoadedModel(model.name, version.version, signature, runtime)
                self._loaded[(model.name, version.version)] = loaded
                log.info("loaded %s (%s)", loaded.label, signature.platform)
        if failures:
            self.close()
            raise ModelLoadError("; ".join(failures))

    def get(self, name: str, version: str = "") -> LoadedModel:
        """The model version asked for, or its default version when `version` is empty."""
        config = self._configs.get(name)
        if config is None:
            known = ", ".join(sorted(self._configs)) or "none"
            raise NotFound(f"model '{name}' not found (models served: {known})")
        key = (name, version or config.served_default_version)
        loaded = self._loaded.get(key)
        if loaded is None:
            versions = ", ".join(self.versions(name))
            raise NotFound(f"model '{name}' has no version '{version}' (versions: {versions})")
        return loaded

    def has_model(self, name: str) -> bool:
        return name in self._configs

    def versions(self, name: str) -> list[str]:
        return [v.version for v in self._configs[name].versions]

    def models(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def close(self) -> None:
        for loaded in self._loaded.values():
            loaded.runtime.close()
        self._loaded.clear()
