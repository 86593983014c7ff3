"""What users build today: a Ray Serve deployment with `@serve.batch` around the ONNX model.

One replica runs the model with ONNX Runtime; requests reach it through Ray Serve's gRPC
proxy, on which our OIP servicer is registered, so the benchmark's gRPC client and payload
drive it exactly like every other target. ModelInfer decodes raw_input_contents and answers
every output (or the requested ones) in raw_output_contents.

Runs on a local Ray it starts (2 CPUs) and serves until SIGINT or SIGTERM, then shuts Serve
and Ray down. With RAY_SERVE_THROUGHPUT_OPTIMIZED=1 in its environment (Serve's fast path:
direct ingress on the replica's own ports), it prints the replica's ports once ready:

  .venv/bin/python -m loadtests.plain_ray_serve --model-path ~/.cache/switchyard/demo/ranker.onnx \
      --grpc-port 9101 --http-port 9100 [--batch-wait-timeout-s 0.005]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
from ray import serve

from switchyard.protos import open_inference_pb2 as pb

GRPC_SERVICER_FUNCTIONS = [
    "switchyard.protos.open_inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server"
]
APP_NAME = "plain"
MAX_BATCH_ROWS = 64  # as Switchyard's and Triton's batchers in the comparison
# Serve's default (5) would cap every batch at 5 requests; its batching guide asks for at
# least max_batch_size. Twice that lets the next batch fill while one runs.
MAX_ONGOING_REQUESTS = 2 * MAX_BATCH_ROWS
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.005


def _rows(batch: list[np.ndarray]) -> int:
    return sum(len(item) for item in batch)


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
    ray_actor_options={"num_cpus": 1},
)
class OnnxModel:
    def __init__(self, model_path: str, batch_wait_timeout_s: float) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as the other targets: one core per model call
        self._session = ort.InferenceSession(
            model_path, options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._outputs = [output.name for output in self._session.get_outputs()]
        # serve.batch's wrapper has the setter; Ray types the wrapper as a plain callable.
        self.infer_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=MAX_BATCH_ROWS, batch_size_fn=_rows)
    async def infer_batch(self, batch: list[np.ndarray]) -> list[list[np.ndarray]]:
        outputs = self._session.run(self._outputs, {self._input: np.concatenate(batch)})
        bounds = np.cumsum([len(item) for item in batch])[:-1]
        return [
            list(parts) for parts in zip(*(np.split(out, bounds) for out in outputs), strict=True)
        ]

    async def ModelInfer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        shape = tuple(request.inputs[0].shape)
        rows = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(shape)
        outputs = dict(zip(self._outputs, await self.infer_batch(rows), strict=True))
        names = [output.name for output in request.outputs] or self._outputs
        return pb.ModelInferResponse(
            model_name=request.model_name,
            model_version="1",
            id=request.id,
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(
                    name=name, datatype="FP32", shape=list(outputs[name].shape)
                )
                for name in names
            ],
            raw_output_contents=[outputs[name].tobytes() for name in names],
        )


def serve_until_stopped(
    model_path: Path, grpc_port: int, http_port: int, batch_wait_timeout_s: float, num_cpus: int
) -> None:
    import ray
    from ray.serve.config import gRPCOptions

    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which sets its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": http_port},
            grpc_options=gRPCOptions(
                port=grpc_port, grpc_servicer_functions=GRPC_SERVICER_FUNCTIONS
            ),
        )
        # @serve.deployment made the class a Deployment; mypy keeps a decorated class's type.
        app = OnnxModel.bind(str(model_path.resolve()), batch_wait_timeout_s)  # type: ignore[attr-defined]
        serve.run(app, name=APP_NAME, route_prefix="/")
        print(f"plain Ray Serve ready: gRPC on port {grpc_port}", flush=True)
        # Under Serve's direct ingress (RAY_SERVE_THROUGHPUT_OPTIMIZED=1 in the environment)
        # the replica has ports of its own; printed as Switchyard's Ray host prints them.
        from switchyard.server.ray_host.app import ingress_endpoints

        direct = os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1"
        for endpoint in ingress_endpoints(1, "127.0.0.1", app_name=APP_NAME) if direct else []:
            print(endpoint.line(), flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-path", type=Path, required=True)
    parser.add_argument("--grpc-port", type=int, default=9101)
    parser.add_argument("--http-port", type=int, default=9100)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=DEFAULT_BATCH_WAIT_TIMEOUT_S)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    # Imported by name, so Ray pickles the deployment by reference, not as __main__'s class.
    from loadtests.plain_ray_serve import serve_until_stopped as serve_by_name

    serve_by_name(
        args.model_path, args.grpc_port, args.http_port, args.batch_wait_timeout_s, args.num_cpus
    )


if __name__ == "__main__":
    main()
