"""Loading one model version: the batch size in force against the preferred sizes, and the
message size of a Triton channel against the server's request size (no server started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from switchyard.runtimes.errors import ModelLoadError
from switchyard.runtimes.triton_runtime import TritonModel, TritonOptions
from switchyard.server.config import ModelConfig
from switchyard.server.dataplane import _batch_rows
from switchyard.server.metrics import ServerMetrics
from switchyard.server.repository import (
    GRPC_MAX_MESSAGE_BYTES,
    create_runtime,
    load_model_version,
    triton_message_bytes,
)
from tests.edge_models import build_scalar_model

MIB = 1024 * 1024


def model_config(path: Path | None = None, **fields: Any) -> ModelConfig:
    version: dict[str, Any] = {"version": "1"}
    if path is not None:
        version["path"] = str(path)
    return ModelConfig.model_validate({"name": "m", "versions": [version], **fields})


def test_preferred_sizes_the_batch_size_in_force_cannot_hold_are_a_load_error(
    tmp_path: Path, demo_model_path: Path
) -> None:
    scalar = model_config(
        build_scalar_model(tmp_path / "scalar.onnx"), batching={"preferred_batch_sizes": [2, 4]}
    )
    with pytest.raises(ModelLoadError) as error:
        load_model_version(scalar, scalar.versions[0], ServerMetrics())
    assert str(error.value) == (
        "model 'm': batching.preferred_batch_sizes [2, 4] cannot be formed: batching is off "
        "for it (it has no batch dimension, or Triton batches it); remove them"
    )
    # A batchable model takes them at its default batch size.
    ranker = model_config(demo_model_path, batching={"preferred_batch_sizes": [4, 64]})
    loaded = load_model_version(ranker, ranker.versions[0], ServerMetrics())
    assert loaded.batcher.max_batch_size == 64
    loaded.runtime.close()


def triton_model(**fields: Any) -> ModelConfig:
    return model_config(
        runtime="triton", triton={"url": "127.0.0.1:1", **fields.pop("triton", {})}, **fields
    )


@pytest.mark.parametrize(
    ("fields", "expected_bytes"),
    [
        ({"triton": {"batching": "triton"}}, 3 * MIB),  # one request at a time
        ({"batching": {"max_batch_size": 8}}, 8 * 3 * MIB),  # a batch of up to 8 requests
        ({"batching": {"max_batch_size": 0}}, 3 * MIB),  # batching off: one request
        ({}, 64 * 3 * MIB),  # the default batch size
    ],
)
def test_a_triton_channel_carries_a_batch_of_the_largest_requests(
    fields: dict[str, Any], expected_bytes: int
) -> None:
    model = triton_model(**fields)
    assert triton_message_bytes(model, 3 * MIB) == expected_bytes
    runtime = create_runtime(
        model, model.versions[0], ServerMetrics(), max_request_size_bytes=3 * MIB
    )
    assert isinstance(runtime, TritonModel)
    size_options = {name: value for name, value in runtime._channel_options() if "message" in name}
    assert size_options == {
        "grpc.max_receive_message_length": expected_bytes,
        "grpc.max_send_message_length": expected_bytes,
    }


def test_a_triton_channel_stays_within_grpcs_limit() -> None:
    assert triton_message_bytes(triton_model(), 1024 * MIB) == GRPC_MAX_MESSAGE_BYTES
    # Without the server's size (a runtime built on its own): the runtime's default.
    default = create_runtime(triton_model(), triton_model().versions[0], ServerMetrics())
    assert isinstance(default, TritonModel)
    assert ("grpc.max_send_message_length", TritonOptions("u", "m").max_message_bytes) in (
        default._channel_options()
    )


def test_batch_rows_need_a_first_dimension_every_input_shares() -> None:
    rows = np.zeros((3, 2), np.float32)
    assert _batch_rows({"a": rows, "b": np.zeros(3, np.int64)}) == 3
    assert _batch_rows({"x": np.array(1.0, np.float32)}) is None  # 0-d: no rows at all
    assert _batch_rows({"a": rows, "x": np.array(1.0, np.float32)}) is None
    assert _batch_rows({"a": rows, "b": np.zeros((4, 2), np.float32)}) is None
    assert _batch_rows({}) is None
