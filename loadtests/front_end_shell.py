"""`switchyard` whose ModelInfer is replaced by the least a Python server must do.

Everything around the inference path stays: the gRPC server and its options, admission,
the decoding guard, the drain, the pending-wait sampler, REST, metrics and every background
task. The first argument picks the answer:

  echo    as the bare echo server answers (loadtests/echo_server.py): no model at all
  model   the demo ranker run by ONNX Runtime on the request's raw FP32 rows, on the event
          loop, and its two outputs sent back: no validation, routing, batching, metrics,
          drift or request id

Measured against the echo server (loadtests/bench_front_end.py), `echo` tells what the
gateway's shell costs, and `model` the floor of any Python handler that runs the model.
A diagnostic, never served.

Run: `.venv/bin/python -m loadtests.front_end_shell echo|model serve --config FILE`
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import onnxruntime as ort

from loadtests.echo_server import EchoServicer
from switchyard.demo.build_model import ensure_built
from switchyard.protos import open_inference_pb2 as pb
from switchyard.server.cli import main
from switchyard.server.grpc_ingress import InferenceServicer

FEATURES = 16


def _session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the demo config runs it
    return ort.InferenceSession(str(ensure_built()), options, providers=["CPUExecutionProvider"])


def model_answer(session: ort.InferenceSession) -> Callable[..., Awaitable[Any]]:
    async def answer(
        self: Any, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        rows = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(-1, FEATURES)
        logit, score = session.run(["logit", "score"], {"features": rows})
        tensor = pb.ModelInferResponse.InferOutputTensor
        return pb.ModelInferResponse(
            model_name=request.model_name,
            model_version="1",
            id=request.id,
            outputs=[
                tensor(name="logit", datatype="FP32", shape=logit.shape),
                tensor(name="score", datatype="FP32", shape=score.shape),
            ],
            raw_output_contents=[logit.tobytes(), score.tobytes()],
        )

    return answer


ANSWERS = ("echo", "model")

if __name__ == "__main__":
    answer = sys.argv.pop(1) if len(sys.argv) > 1 else ""
    if answer not in ANSWERS:
        sys.exit(f"usage: python -m loadtests.front_end_shell {'|'.join(ANSWERS)} serve ...")
    handler = EchoServicer.ModelInfer if answer == "echo" else model_answer(_session())
    InferenceServicer.ModelInfer = handler  # type: ignore[method-assign,assignment]
    sys.exit(main())
