"""A bare grpc.aio OIP server that answers ModelInfer with its input as the output.

The ceiling for a Python gRPC front end on this machine: no validation, no model, no
batching; the response has the same payload size as the gateway's for the demo ranker.
Run: `.venv/bin/python -m loadtests.echo_server --port 9001`
"""

from __future__ import annotations

import argparse

import grpc
import uvloop

from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc


class EchoServicer(pb_grpc.GRPCInferenceServiceServicer):
    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelInfer(self, request, context) -> pb.ModelInferResponse:
        tensor = request.inputs[0]
        rows = tensor.shape[0]
        output = pb.ModelInferResponse.InferOutputTensor(
            name="score", datatype="FP32", shape=[rows, 1]
        )
        # One FP32 per row, as the demo ranker's `score` output.
        return pb.ModelInferResponse(
            model_name=request.model_name,
            model_version="1",
            id=request.id,
            outputs=[output],
            raw_output_contents=[request.raw_input_contents[0][: 4 * rows]],
        )


async def serve(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(EchoServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9001)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
