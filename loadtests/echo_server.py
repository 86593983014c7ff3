"""A bare grpc.aio OIP server that answers ModelInfer with slices of its input as the output.

The ceiling for a Python gRPC front end on this machine: no validation, no model, no
batching; the response has the payload size of the gateway's for the demo ranker (the
requested outputs, else `logit` and `score`, one FP32 per row each).
Run: `.venv/bin/python -m loadtests.echo_server --port 9001`
"""

from __future__ import annotations

import argparse

import grpc
import uvloop

from switchyard.protos import open_inference_pb2 as pb
from switchyard.protos import open_inference_pb2_grpc as pb_grpc

DEMO_OUTPUTS = ("logit", "score")
FP32_BYTES = 4


class EchoServicer(pb_grpc.GRPCInferenceServiceServicer):
    async def ServerLive(
        self,
        request: pb.ServerLiveRequest,
        context: grpc.aio.ServicerContext[pb.ServerLiveRequest, pb.ServerLiveResponse],
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self,
        request: pb.ServerReadyRequest,
        context: grpc.aio.ServicerContext[pb.ServerReadyRequest, pb.ServerReadyResponse],
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(
        self,
        request: pb.ModelReadyRequest,
        context: grpc.aio.ServicerContext[pb.ModelReadyRequest, pb.ModelReadyResponse],
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(
        self,
        request: pb.ModelInferRequest,
        context: grpc.aio.ServicerContext[pb.ModelInferRequest, pb.ModelInferResponse],
    ) -> pb.ModelInferResponse:
        rows = request.inputs[0].shape[0]
        names = [output.name for output in request.outputs] or DEMO_OUTPUTS
        # One FP32 per row and output, as the demo ranker answers.
        data = request.raw_input_contents[0][: FP32_BYTES * rows]
        return pb.ModelInferResponse(
            model_name=request.model_name,
            model_version="1",
            id=request.id,
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(name=name, datatype="FP32", shape=[rows, 1])
                for name in names
            ],
            raw_output_contents=[data] * len(names),
        )


async def serve(port: int, host: str = "127.0.0.1") -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(EchoServicer(), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9001)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
