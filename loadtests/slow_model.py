"""A test model that takes tens of milliseconds per call, whatever its batch size.

`y = 2 * x` on FP32 [-1, 4], plus a square matrix product scaled by the first input value,
reduced to zero (s - s): the work cannot be constant-folded, and the result stays exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_slow_model(path: Path, work_dim: int = 768) -> Path:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(work_dim, work_dim)).astype(np.float32)
    b = rng.normal(size=(work_dim, work_dim)).astype(np.float32)
    nodes = [
        helper.make_node("Slice", ["x", "zero", "one", "zero"], ["first_column"]),
        helper.make_node("ReduceMean", ["first_column"], ["scale"], keepdims=1),
        helper.make_node("Mul", ["a", "scale"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "b"], ["product"]),
        helper.make_node("MatMul", ["product", "b"], ["product2"]),
        helper.make_node("ReduceSum", ["product2"], ["total"], keepdims=1),
        helper.make_node("Sub", ["total", "total"], ["nothing"]),
        helper.make_node("Mul", ["x", "two"], ["doubled"]),
        helper.make_node("Add", ["doubled", "nothing"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            numpy_helper.from_array(a, "a"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
