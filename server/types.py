"""Transport-neutral requests and responses of the data plane (what both ingresses speak)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Values of OIP parameters: what both the proto's InferParameter and JSON can carry.
ParameterValue = bool | int | float | str


@dataclass(slots=True)
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(slots=True)
class InferRequest:
    model_name: str
    inputs: list[InferInput]
    model_version: str = ""  # empty: the model's default version
    id: str = ""
    # Requested output names; empty means every output of the model.
    output_names: list[str] = field(default_factory=list)
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    # HTTP headers or gRPC metadata, names in lower case (routing keys and overrides).
    headers: Mapping[str, str] = field(default_factory=dict)
    # Absolute deadline on the monotonic clock, from the caller's gRPC deadline or timeout.
    deadline_s: float | None = None


@dataclass(slots=True)
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[InferOutput]
    parameters: dict[str, ParameterValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]

    def as_json(self) -> dict[str, Any]:
        def tensors(specs: tuple[TensorMetadata, ...]) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in specs]

        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": tensors(self.inputs),
            "outputs": tensors(self.outputs),
        }
