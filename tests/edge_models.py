"""ONNX models at the edges of what the gateway serves: a scalar (0-d) input, and a model
that loads but fails on its warm-up input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # loads on every onnxruntime the project supports
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_scalar_model(path: Path) -> Path:
    """`y = 2 * x` on a 0-d FP32 `x`: no batch dimension at all."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "scalar",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        initializer=[numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )
    return _save(graph, path)


def build_warmup_failing_model(path: Path) -> Path:
    """`x` FP32 [n] reshaped to [2, 3]: it loads (n is symbolic), and fails on any n but 6,
    the warm-up's n = 1 included."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "reshape_to_six",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "shape")],
    )
    return _save(graph, path)
