"""Sequential ModelInfer latency through the gateway beside a direct ONNX Runtime call.

Starts the gateway on the demo model (its own process, free loopback ports), then times
one request at a time: tritonclient.grpc, tritonclient.http (binary tensors), and
ONNX Runtime called in this process on the same inputs (the floor). Prints p50/p90/p99.

Run: `.venv/bin/python -m loadtests.bench_infer_latency [--requests 2000] [--rows 1]`
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from loadtests.gateway_process import demo_model_config, start_gateway
from loadtests.latency import percentiles_us, time_calls
from switchyard.demo.build_model import ensure_built


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    args = parser.parse_args()

    model_path = ensure_built()
    features = np.random.default_rng(0).normal(size=(args.rows, 16)).astype(np.float32)
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_path), session_options, providers=["CPUExecutionProvider"]
    )

    with tempfile.TemporaryDirectory() as workdir:
        gateway = start_gateway(demo_model_config(model_path), Path(workdir))
        try:
            grpc_client = triton_grpc.InferenceServerClient(gateway.grpc_url)
            grpc_input = triton_grpc.InferInput("features", list(features.shape), "FP32")
            grpc_input.set_data_from_numpy(features)
            http_client = triton_http.InferenceServerClient(gateway.http_url)
            http_input = triton_http.InferInput("features", list(features.shape), "FP32")
            http_input.set_data_from_numpy(features)
            expected = session.run(["score"], {"features": features})[0]
            served = grpc_client.infer("ranker", [grpc_input]).as_numpy("score")
            assert np.array_equal(served, expected), "gateway and direct call disagree"
            cases = {
                "direct ONNX Runtime (in process)": lambda: session.run(
                    ["logit", "score"], {"features": features}
                ),
                "gateway, tritonclient.grpc": lambda: grpc_client.infer("ranker", [grpc_input]),
                "gateway, tritonclient.http": lambda: http_client.infer("ranker", [http_input]),
            }
            results = {
                name: percentiles_us(time_calls(call, args.requests, args.warmup))
                for name, call in cases.items()
            }
        finally:
            gateway.stop()

    floor = results["direct ONNX Runtime (in process)"]["p50"]
    print(f"\nsequential latency, {args.requests} requests of {args.rows} row(s), demo ranker")
    print(
        f"| {'path':<34} | {'p50 us':>8} | {'p90 us':>8} | {'p99 us':>8} | {'p50 / direct':>12} |"
    )
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 14}|")
    for name, p in results.items():
        print(
            f"| {name:<34} | {p['p50']:8.1f} | {p['p90']:8.1f} | {p['p99']:8.1f} "
            f"| {p['p50'] / floor:11.1f}x |"
        )


if __name__ == "__main__":
    main()
