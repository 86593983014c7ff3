"""Between Triton's ModelConfig and Switchyard's models: a config.pbtxt's inputs and outputs
checked against the loaded model, and the ModelConfig reported for a model of the YAML config.

Triton's dims leave out the batch dimension when max_batch_size > 0: the model's shapes are
then compared from their second dimension, and every model tensor must have a variable first
dimension. -1 on either side matches any size. The listed inputs must be the model's inputs
exactly; the listed outputs may be some of the model's (Triton lets a config name a subset).
"""

from __future__ import annotations

from collections.abc import Sequence

from switchyard.protos import open_inference_pb2 as pb
from switchyard.runtimes.base import ModelSignature, TensorSpec
from switchyard.runtimes.errors import ModelLoadError
from switchyard.server.model_config import GPU_EXECUTION_PROVIDERS, ModelConfig

_US_PER_S = 1_000_000

# Triton's DataType -> the Open Inference Protocol's datatype name.
DATATYPE_NAMES: dict[pb.DataType, str] = {
    pb.TYPE_BOOL: "BOOL",
    pb.TYPE_UINT8: "UINT8",
    pb.TYPE_UINT16: "UINT16",
    pb.TYPE_UINT32: "UINT32",
    pb.TYPE_UINT64: "UINT64",
    pb.TYPE_INT8: "INT8",
    pb.TYPE_INT16: "INT16",
    pb.TYPE_INT32: "INT32",
    pb.TYPE_INT64: "INT64",
    pb.TYPE_FP16: "FP16",
    pb.TYPE_FP32: "FP32",
    pb.TYPE_FP64: "FP64",
    pb.TYPE_STRING: "BYTES",
    pb.TYPE_BF16: "BF16",
}
DATA_TYPES: dict[str, pb.DataType] = {name: data_type for data_type, name in DATATYPE_NAMES.items()}

# The backend Triton reports for each platform it names.
_BACKEND_OF_PLATFORM = {
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
    "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
}

ConfigTensor = pb.ModelInput | pb.ModelOutput


def check_signature(triton_config: pb.ModelConfig, signature: ModelSignature) -> None:
    """ModelLoadError listing every way the config's inputs and outputs (names, data types,
    dims) and its max_batch_size disagree with the loaded model; empty lists are not checked."""
    problems: list[str] = []
    batched = triton_config.max_batch_size > 0
    if batched:
        problems += [
            f"max_batch_size {triton_config.max_batch_size} needs a variable first (batch) "
            f"dimension, but '{spec.name}' has shape {list(spec.shape)}"
            for spec in (*signature.inputs, *signature.outputs)
            if not spec.shape or spec.shape[0] != -1
        ]
    problems += _compare_tensors("input", triton_config.input, signature.inputs, batched)
    if triton_config.input:
        listed = {tensor.name for tensor in triton_config.input}
        problems += [
            f"the model's input '{spec.name}' is not listed"
            for spec in signature.inputs
            if spec.name not in listed
        ]
    problems += _compare_tensors("output", triton_config.output, signature.outputs, batched)
    if problems:
        raise ModelLoadError(
            f"model '{triton_config.name}': its ModelConfig does not match the model: "
            + "; ".join(problems)
        )


def _compare_tensors(
    kind: str,
    listed: Sequence[ConfigTensor],
    model_tensors: Sequence[TensorSpec],
    batched: bool,
) -> list[str]:
    by_name = {spec.name: spec for spec in model_tensors}
    problems = []
    for tensor in listed:
        spec = by_name.get(tensor.name)
        if spec is None:
            problems.append(
                f"{kind} '{tensor.name}' is not one of the model's {kind}s "
                f"({', '.join(by_name) or 'none'})"
            )
            continue
        data_type = DATATYPE_NAMES.get(tensor.data_type)
        if data_type != spec.datatype:
            problems.append(
                f"{kind} '{tensor.name}' has data_type {pb.DataType.Name(tensor.data_type)}, "
                f"the model's is {spec.datatype} (TYPE_{_triton_type_suffix(spec.datatype)})"
            )
        model_dims = spec.shape[1:] if batched else spec.shape
        if not _dims_match(tuple(tensor.dims), model_dims):
            without_batch = " without the batch dimension" if batched else ""
            problems.append(
                f"{kind} '{tensor.name}' has dims {list(tensor.dims)}, the model's "
                f"are {list(model_dims)}{without_batch}"
            )
    return problems


def _triton_type_suffix(datatype: str) -> str:
    return "STRING" if datatype == "BYTES" else datatype


def _dims_match(listed: tuple[int, ...], model: tuple[int, ...]) -> bool:
    return len(listed) == len(model) and all(
        a == b or a == -1 or b == -1 for a, b in zip(listed, model, strict=True)
    )


def with_model_tensors(triton_config: pb.ModelConfig, signature: ModelSignature) -> pb.ModelConfig:
    """A copy of the config with the model's inputs and outputs where it lists none, as Triton
    completes a config from the model (dims without the batch dimension when batched)."""
    completed = pb.ModelConfig()
    completed.CopyFrom(triton_config)
    skip = 1 if triton_config.max_batch_size > 0 else 0
    if not completed.input:
        completed.input.extend(
            pb.ModelInput(name=s.name, data_type=DATA_TYPES.get(s.datatype), dims=s.shape[skip:])
            for s in signature.inputs
        )
    if not completed.output:
        completed.output.extend(
            pb.ModelOutput(name=s.name, data_type=DATA_TYPES.get(s.datatype), dims=s.shape[skip:])
            for s in signature.outputs
        )
    return completed


def to_triton_config(
    config: ModelConfig, platform: str, served_max_batch_size: int | None = None
) -> pb.ModelConfig:
    """The ModelConfig that describes a model of the YAML config as Switchyard serves it.

    `served_max_batch_size`: the rows per batch the loaded model runs with (the config may
    leave it to be chosen from the model's shapes); unset: the config's, 0 if it has none.
    """
    max_batch_size = served_max_batch_size
    if max_batch_size is None:
        max_batch_size = config.batching.max_batch_size or 0
    triton_config = pb.ModelConfig(
        name=config.name,
        platform=platform,
        backend=_BACKEND_OF_PLATFORM.get(platform) or _backend_named_in(platform),
        max_batch_size=max_batch_size,
        instance_group=[
            pb.ModelInstanceGroup(count=config.batching.instance_count, kind=_instance_kind(config))
        ],
    )
    if max_batch_size > 0:
        # Switchyard batches whatever is queued, so a batched model is dynamically batched.
        batching = config.batching
        triton_config.dynamic_batching.SetInParent()
        triton_config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
        triton_config.dynamic_batching.max_queue_delay_microseconds = round(
            batching.max_queue_delay_s * _US_PER_S
        )
    return triton_config


def _backend_named_in(platform: str) -> str:
    """The backend a runtime's own platform string names (`triton:onnxruntime_onnx`)."""
    return platform.split(":", 1)[-1].removesuffix("_onnx")


def _instance_kind(config: ModelConfig) -> pb.ModelInstanceGroup.Kind:
    providers = config.runtime_options.execution_providers
    if config.runtime != "onnxruntime" or "auto" in providers:
        return pb.ModelInstanceGroup.KIND_AUTO
    if GPU_EXECUTION_PROVIDERS & set(providers):
        return pb.ModelInstanceGroup.KIND_GPU
    return pb.ModelInstanceGroup.KIND_CPU
