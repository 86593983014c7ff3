"""Serve an ONNX model on a real Triton Inference Server (CPU) through PyTriton.

Runs in .venv-triton (see scripts/triton_env.sh), never in the main venv: PyTriton needs numpy<2.

  .venv-triton/bin/python loadtests/pytriton_server.py \
      --model-path ~/.cache/switchyard/demo/ranker.onnx \
      --http-port 8000 --grpc-port 8001 --metrics-port 8002 [--model-name ranker]

PyTriton starts the `tritonserver` binary from its wheel with a Python-backend proxy model that
forwards each batch to `infer` below, which runs the model with ONNX Runtime in this process.
Serves until SIGTERM or SIGINT, then stops Triton and removes its workspace. Logs to stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

log = logging.getLogger("pytriton_server")

N_FEATURES = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=Path, required=True, help="ONNX model file")
    parser.add_argument("--model-name", default="ranker")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address every endpoint binds to")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=0,
        help="Triton dynamic batcher's max_queue_delay_microseconds",
    )
    parser.add_argument("--workspace", type=Path, default=None, help="PyTriton's scratch folder")
    parser.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose")
    parser.add_argument("--grpc-server-cert", default=None, help="PEM: gRPC over TLS")
    parser.add_argument("--grpc-server-key", default=None, help="PEM key of --grpc-server-cert")
    parser.add_argument("--grpc-root-cert", default=None, help="PEM CA of client certificates")
    parser.add_argument(
        "--grpc-use-ssl-mutual", action="store_true", help="clients must present a certificate"
    )
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the launching process dies (so a SIGKILLed pytest leaves no server)",
    )
    return parser.parse_args(argv)


def ensure_libpython_on_path() -> None:
    """Put this interpreter's libpython first on LD_LIBRARY_PATH for Triton's children.

    The Python backend stub (`triton_python_backend_stub`) links libpython3.X.so dynamically.
    Under pyenv that library is not in the loader's default path (or a different patch release
    of the system Python is found there first), so the stub would fail to start or mix runtimes.
    tritonserver and the stub inherit this process's environment, so setting it here suffices.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir:
        return
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir not in current.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def stop_when_orphaned(poll_s: float = 1.0) -> None:
    """SIGTERM ourselves once the parent is gone (reparented), from a daemon thread."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.warning("parent process %d exited; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def make_infer(session: ort.InferenceSession) -> Callable[..., Any]:
    """The inference callable: @batch hands it the requests in one queue pass, concatenated."""

    def infer(features: np.ndarray) -> dict[str, np.ndarray]:
        logit, score = session.run(["logit", "score"], {"features": features})
        return {"logit": logit, "score": score}

    # Applied by hand, not as @batch: pytriton ships no types, so name what it gives back.
    batched: Callable[..., dict[str, np.ndarray]] = batch(infer)
    return batched


def grpc_tls_options(args: argparse.Namespace) -> dict[str, object]:
    """TritonConfig's gRPC TLS settings (tritonserver --grpc-use-ssl ...); none: plaintext.
    Triton's HTTP endpoint has no TLS, so PyTriton's own readiness checks stay as they are."""
    if args.grpc_server_cert is None:
        return {}
    return {
        "grpc_use_ssl": True,
        "grpc_use_ssl_mutual": args.grpc_use_ssl_mutual,
        "grpc_server_cert": args.grpc_server_cert,
        "grpc_server_key": args.grpc_server_key,
        "grpc_root_cert": args.grpc_root_cert,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ensure_libpython_on_path()

    options = ort.SessionOptions()
    # One intra-op thread: the machines have 2 cores, shared with Triton and the test process.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(args.model_path), options, providers=["CPUExecutionProvider"]
    )

    config = TritonConfig(
        http_address=args.host,
        http_port=args.http_port,
        grpc_address=args.host,
        grpc_port=args.grpc_port,
        metrics_address=args.host,
        metrics_port=args.metrics_port,
        allow_metrics=True,
        allow_gpu_metrics=False,
        log_verbose=args.log_verbose,
        # Give in-flight requests a short grace period on SIGTERM, not Triton's default 30 s.
        exit_timeout_secs=5,
        **grpc_tls_options(args),
    )
    # No access token: a loopback test server whose statistics and other admin endpoints the
    # tests and benchmarks read without PyTriton's auto-generated token.
    security = TritonSecurityConfig(restricted_endpoints=[])

    triton = Triton(config=config, workspace=args.workspace, security_config=security)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # Triton.serve() turns KeyboardInterrupt into a clean stop; route SIGTERM through it too.
        log.info("received %s, stopping", signal.Signals(signum).name)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.exit_with_parent:
        stop_when_orphaned()

    triton.bind(
        model_name=args.model_name,
        infer_func=make_infer(session),
        inputs=[Tensor(name="features", dtype=np.float32, shape=(N_FEATURES,))],
        outputs=[
            Tensor(name="logit", dtype=np.float32, shape=(1,)),
            Tensor(name="score", dtype=np.float32, shape=(1,)),
        ],
        config=ModelConfig(
            max_batch_size=args.max_batch_size,
            batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
        ),
        strict=True,
    )
    log.info(
        "serving %s as %r: http %s:%d grpc %s:%d metrics %s:%d",
        args.model_path,
        args.model_name,
        args.host,
        args.http_port,
        args.host,
        args.grpc_port,
        args.host,
        args.metrics_port,
    )
    try:
        triton.serve()
    finally:
        triton.stop()
    log.info("stopped")


if __name__ == "__main__":
    main()
