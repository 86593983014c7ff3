"""The direct path to model versions: their readiness and metadata, and inference checked
against the version's signature and run through its batcher.

It knows model versions only, never endpoints: the inference entry point (inference.py)
resolves names and calls it for models, and the routing service is given `infer_model` to
run the variant it picked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np

from switchyard.protos import open_inference_pb2 as pb
from switchyard.runtimes.base import ModelSignature, TensorSpec
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument, UnknownOutput
from switchyard.server.drift import DriftService
from switchyard.server.repository import LoadedModel, ModelRepository
from switchyard.server.triton_config_bridge import to_triton_config, with_model_tensors
from switchyard.server.types import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    ModelMetadata,
    TensorMetadata,
)

# Triton's request parameter: a timeout for the request, in microseconds.
TIMEOUT_PARAMETER_US = "timeout"


class DataPlane:
    def __init__(
        self,
        repository: ModelRepository,
        max_request_size_bytes: int,
        drift: DriftService | None = None,
    ) -> None:
        self._repository = repository
        self.max_request_size_bytes = max_request_size_bytes
        # Every inference of a version passes here, direct, routed or Recommend: drift sees
        # each version's inputs and outputs at this one place.
        self._drift = drift

    def has_model(self, name: str) -> bool:
        return self._repository.has_model(name)

    def model_names(self) -> list[str]:
        return sorted({model.name for model in self._repository.models()})

    def check(self, name: str, version: str = "") -> None:
        """NotFound unless the model (and version; empty: its default) is served."""
        self._repository.get(name, version)

    async def model_ready(self, name: str, version: str = "") -> bool:
        """Whether the version's runtime answers; NotFound for unknown names, versions."""
        return await self._repository.get(name, version).runtime.ready()

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        sig = self._repository.get(name, version).signature

        def tensors(specs: Sequence[TensorSpec]) -> tuple[TensorMetadata, ...]:
            return tuple(TensorMetadata(s.name, s.datatype, s.shape) for s in specs)

        return ModelMetadata(
            name=name,
            versions=tuple(self._repository.versions(name)),
            platform=sig.platform,
            inputs=tensors(sig.inputs),
            outputs=tensors(sig.outputs),
        )

    def model_config(self, name: str, version: str = "") -> pb.ModelConfig:
        """Triton's ModelConfig of the version: its config.pbtxt where it came from a model
        repository, else what its config says; the batch size is the one in force, and the
        model's own tensors fill in inputs and outputs the config does not list."""
        model = self._repository.get(name, version)
        served = self._repository.served(name)
        platform = model.signature.platform
        rows = model.batcher.max_batch_size
        if served.triton_config is not None:
            config = pb.ModelConfig()
            config.CopyFrom(served.triton_config)
            config.max_batch_size = rows
        else:
            config = to_triton_config(served.config, platform, rows)
        return with_model_tensors(config, model.signature)

    async def infer_model(self, request: InferRequest) -> InferResponse:
        """Run the model version the request names, without routing."""
        model = self._repository.get(request.model_name, request.model_version)
        output_names = _check_request(model.signature, request)
        inputs = {tensor.name: tensor.data for tensor in request.inputs}
        stats = model.latency_stats
        with model.in_flight:  # an unload frees the version only once this is done
            if stats is None:
                results = await _run_in_batches(model, inputs, _deadline_s(request))
            else:
                stats.request_started()
                started_s = time.perf_counter()
                try:
                    results = await _run_in_batches(model, inputs, _deadline_s(request))
                finally:
                    stats.request_finished(time.perf_counter() - started_s)
        if self._drift is not None:
            self._drift.observe(model, inputs, results)
        return InferResponse(
            model_name=model.name,
            model_version=model.version,
            id=request.id,
            outputs=[_output(model, name, results[name]) for name in output_names],
        )


async def _run_in_batches(
    model: LoadedModel, inputs: dict[str, np.ndarray], deadline_s: float | None
) -> dict[str, np.ndarray]:
    """Run through the model's batcher; a request with more rows than one batch takes (a
    Recommend over hundreds of candidates) runs as several, concatenated in order."""
    # The gateway's batch size, or the runtime's own cap where its server does the batching.
    limit = model.batcher.max_batch_size or model.signature.max_batch_size or 0
    rows = _batch_rows(inputs)
    if limit == 0 or rows is None or rows <= limit:
        # Unsplittable inputs (0-d, or disagreeing on rows) go whole: the batcher refuses
        # what it cannot batch, with a message naming the input.
        return await model.batcher.infer(inputs, deadline_s)
    chunks = await asyncio.gather(
        *(
            model.batcher.infer(
                {n: a[start : start + limit] for n, a in inputs.items()}, deadline_s
            )
            for start in range(0, rows, limit)
        )
    )
    return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}


def _batch_rows(inputs: dict[str, np.ndarray]) -> int | None:
    """The rows the inputs share on their first dimension; None without one (a scalar
    input, or no inputs) or when they disagree."""
    rows = {array.shape[0] if array.ndim else None for array in inputs.values()}
    if len(rows) != 1:
        return None
    return rows.pop()


def _deadline_s(request: InferRequest) -> float | None:
    """The earlier of the transport's deadline and the request's `timeout` parameter."""
    timeout_us = request.parameters.get(TIMEOUT_PARAMETER_US)
    if isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us <= 0:
        return request.deadline_s
    deadline_s = time.monotonic() + timeout_us / 1e6
    return deadline_s if request.deadline_s is None else min(deadline_s, request.deadline_s)


def _check_request(signature: ModelSignature, request: InferRequest) -> list[str]:
    """Raise InvalidArgument unless the inputs fit the signature; return the outputs to run."""
    given = [tensor.name for tensor in request.inputs]
    expected = [spec.name for spec in signature.inputs]
    if len(set(given)) != len(given):
        raise InvalidArgument(f"input tensors repeat: {client_text(given)}")
    if set(given) != set(expected):
        raise InvalidArgument(
            f"model takes inputs {expected}, the request gave {client_text(given)}"
        )
    for tensor in request.inputs:
        spec = signature.input(tensor.name)
        assert spec is not None
        _check_tensor(spec, tensor)
    if not request.output_names:
        return [spec.name for spec in signature.outputs]
    outputs = [spec.name for spec in signature.outputs]
    unknown = [name for name in request.output_names if name not in outputs]
    if unknown:
        raise UnknownOutput(
            f"requested outputs {client_text(unknown)} do not exist (outputs: {outputs})"
        )
    return list(dict.fromkeys(request.output_names))


def _check_tensor(spec: TensorSpec, tensor: InferInput) -> None:
    if tensor.datatype != spec.datatype:
        raise InvalidArgument(
            f"tensor '{client_text(tensor.name)}': datatype {client_text(tensor.datatype)} "
            f"does not match the model's "
            f"{spec.datatype}"
        )
    fits = len(tensor.shape) == len(spec.shape) and all(
        want < 0 or want == got for want, got in zip(spec.shape, tensor.shape, strict=True)
    )
    if not fits:
        raise InvalidArgument(
            f"tensor '{client_text(tensor.name)}': shape {list(tensor.shape)} does not match the "
            "model's "
            f"{list(spec.shape)} (-1 is any size)"
        )


def _output(model: LoadedModel, name: str, data: np.ndarray) -> InferOutput:
    spec = model.signature.output(name)
    assert spec is not None
    return InferOutput(name=name, datatype=spec.datatype, shape=tuple(data.shape), data=data)
