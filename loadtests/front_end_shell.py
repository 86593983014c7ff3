"""`switchyard` whose ModelInfer answers as the bare echo server does (loadtests/echo_server.py).

Everything around the inference path stays: the gRPC server and its options, admission,
the decoding guard, the drain, the pending-wait sampler, REST, metrics and every background
task. Measured against the echo server, it tells what the gateway's shell costs apart from
the work of serving a request (loadtests/bench_front_end.py). A diagnostic, never served.

Run: `.venv/bin/python -m loadtests.front_end_shell serve --config FILE` (the CLI's arguments)
"""

from __future__ import annotations

import sys

from loadtests.echo_server import EchoServicer
from switchyard.server.cli import main
from switchyard.server.grpc_ingress import InferenceServicer

if __name__ == "__main__":
    InferenceServicer.ModelInfer = EchoServicer.ModelInfer  # type: ignore[method-assign,assignment]
    sys.exit(main())
