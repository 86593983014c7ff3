"""Open Inference Protocol v2 over gRPC (grpc.aio): decode, call the inference entry
point, encode.

Errors reach the client through the table every ingress shares (error_status.py); anything
unexpected is logged with its traceback and reaches the client as a generic INTERNAL message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from switchyard.protos import open_inference_pb2 as pb
from switchyard.protos import open_inference_pb2_grpc as pb_grpc
from switchyard.runtimes import tracing
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import AuthThrottled, InvalidArgument
from switchyard.runtimes.tensor_codec import decode_raw, encode_raw
from switchyard.server.caller import Caller
from switchyard.server.error_status import grpc_status
from switchyard.server.feedback import REQUEST_ID_HEADER, new_request_id, request_id_problem
from switchyard.server.grpc_admission import AdmissionGate
from switchyard.server.grpc_decoding import CleanDecoding
from switchyard.server.grpc_pending import (
    PendingWaitEstimator,
    channelz_calls_started,
    channelz_server_ids,
    sample_interval_for,
)
from switchyard.server.inference import InferenceService
from switchyard.server.metrics import ServerMetrics
from switchyard.server.off_loop import decode_off_loop
from switchyard.server.repository_api import RepositoryApi
from switchyard.server.routing import VARIANT_HEADER, VARIANT_PARAMETER
from switchyard.server.tensors import checked_element_count, decode_values
from switchyard.server.types import InferInput, InferRequest, InferResponse, ParameterValue

log = logging.getLogger(__name__)
PROTOCOL = "grpc"
RETRY_AFTER_KEY = "retry-after"  # trailing metadata of a throttled call: seconds to wait
INFER_SPAN = "inference.GRPCInferenceService/ModelInfer"  # OpenTelemetry's rpc span name

# Which InferTensorContents field carries each datatype; FP16 and BF16 travel raw only.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# Requests carrying more than this many typed values, or raw BYTES tensors larger than this,
# are decoded off the event loop (server/off_loop.py): both are converted value by value.
INLINE_DECODE_MAX_VALUES = 64 * 1024


class CallContext(Protocol):
    """What the servicers use of grpc.aio's ServicerContext (the Ray host passes its own)."""

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]] | None: ...

    def time_remaining(self) -> float | None: ...

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None: ...

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn: ...


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def maps_errors(handler: Handler) -> Handler:
    """Turn exceptions into gRPC statuses; cancellation (client gone) passes through."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: CallContext) -> Any:
        try:
            return await handler(self, request, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code, message = grpc_status(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed", handler.__name__)
            if isinstance(exc, AuthThrottled):  # as HTTP's Retry-After, for clients that look
                context.set_trailing_metadata(((RETRY_AFTER_KEY, str(exc.retry_after_s)),))
            await context.abort(code, message)

    return wrapper  # type: ignore[return-value]


def text_metadata(context: CallContext) -> dict[str, str]:
    """The call's text metadata, names in lower case."""
    return {
        key.lower(): value
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)  # binary (-bin) metadata carries no routing hints or tokens
    }


def _parameters(params: Any) -> dict[str, Any]:
    """Infer parameters (bool, int, float, string) and repository ones (bytes too)."""
    decoded: dict[str, Any] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            decoded[key] = getattr(param, choice)
    return decoded


def _set_parameters(target: Any, values: dict[str, ParameterValue]) -> None:
    for key, value in values.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)


def decode_infer_request(message: pb.ModelInferRequest, max_size_bytes: int) -> InferRequest:
    raw_contents = message.raw_input_contents
    if raw_contents and len(raw_contents) != len(message.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw_contents)} entries for {len(message.inputs)} "
            "inputs; send one entry per input, in the order of the inputs"
        )
    inputs = []
    for index, tensor in enumerate(message.inputs):
        shape = tuple(tensor.shape)
        checked_element_count(tensor.name, tensor.datatype, shape, max_size_bytes)
        where = f"tensor '{client_text(tensor.name)}'"
        if raw_contents:
            if tensor.HasField("contents"):
                raise InvalidArgument(f"{where}: both contents and raw_input_contents are set")
            data = decode_raw(tensor.name, tensor.datatype, shape, raw_contents[index])
        else:
            field = CONTENTS_FIELD.get(tensor.datatype)
            if field is None:
                raise InvalidArgument(
                    f"{where}: {tensor.datatype} data must be sent in raw_input_contents"
                )
            data = decode_values(
                tensor.name, tensor.datatype, shape, getattr(tensor.contents, field)
            )
        inputs.append(InferInput(tensor.name, tensor.datatype, shape, data))
    return InferRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        id=message.id,
        inputs=inputs,
        output_names=[output.name for output in message.outputs],
        parameters=_parameters(message.parameters),
    )


def decoding_work(message: pb.ModelInferRequest) -> int:
    """About how many values decoding `message` converts one by one (typed contents, and
    raw BYTES data by its size), without converting any."""
    work = 0
    for index, tensor in enumerate(message.inputs):
        if tensor.HasField("contents"):
            field = CONTENTS_FIELD.get(tensor.datatype)
            if field is not None:
                work += len(getattr(tensor.contents, field))
        if tensor.datatype == "BYTES" and index < len(message.raw_input_contents):
            work += len(message.raw_input_contents[index])
    return work


async def decode_infer_request_off_loop_if_large(
    message: pb.ModelInferRequest, max_size_bytes: int
) -> InferRequest:
    """decode_infer_request, off the event loop when the request is large to decode."""
    if decoding_work(message) <= INLINE_DECODE_MAX_VALUES:
        return decode_infer_request(message, max_size_bytes)
    return await decode_off_loop(decode_infer_request, message, max_size_bytes)


def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id,
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(
                name=output.name, datatype=output.datatype, shape=output.shape
            )
            for output in response.outputs
        ],
        raw_output_contents=[encode_raw(output.data) for output in response.outputs],
    )
    _set_parameters(message.parameters, response.parameters)
    return message


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self, inference: InferenceService, metrics: ServerMetrics, repository: RepositoryApi
    ) -> None:
        self._inference = inference
        self._metrics = metrics
        self._repository = repository

    @property
    def metrics(self) -> ServerMetrics:
        return self._metrics

    @maps_errors
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: CallContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._inference.live())

    @maps_errors
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: CallContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._inference.ready())

    @maps_errors
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: CallContext
    ) -> pb.ModelReadyResponse:
        ready = await self._inference.model_ready(request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    @maps_errors
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: CallContext
    ) -> pb.ServerMetadataResponse:
        meta = self._inference.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta.name, version=meta.version, extensions=meta.extensions
        )

    @maps_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: CallContext
    ) -> pb.ModelMetadataResponse:
        meta = self._inference.model_metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
        )

    @maps_errors
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: CallContext
    ) -> pb.ModelConfigResponse:
        config = self._inference.model_config(request.name, request.version)
        return pb.ModelConfigResponse(config=config)

    @maps_errors
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: CallContext
    ) -> pb.RepositoryIndexResponse:
        entry = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                entry(name=e.name, version=e.version, state=e.state, reason=e.reason)
                for e in self._repository.index(request.ready)
            ]
        )

    @maps_errors
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: CallContext
    ) -> pb.RepositoryModelLoadResponse:
        caller = Caller.from_grpc(context, text_metadata(context))
        actor = self._repository.authorize(caller, "load")
        await self._repository.load(request.model_name, _parameters(request.parameters), actor)
        return pb.RepositoryModelLoadResponse()

    @maps_errors
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: CallContext
    ) -> pb.RepositoryModelUnloadResponse:
        caller = Caller.from_grpc(context, text_metadata(context))
        actor = self._repository.authorize(caller, "unload")
        await self._repository.unload(request.model_name, _parameters(request.parameters), actor)
        return pb.RepositoryModelUnloadResponse()

    @maps_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: CallContext
    ) -> pb.ModelInferResponse:
        headers = text_metadata(context)
        with (
            self._metrics.track(PROTOCOL, self._inference.model_label) as labels,
            tracing.request_span(INFER_SPAN, headers, {"switchyard.model": request.model_name}),
        ):
            labels.model = request.model_name
            infer_request = await decode_infer_request_off_loop_if_large(
                request, self._inference.max_request_size_bytes
            )
            infer_request.headers = headers
            if not infer_request.id:  # OIP's request id: the caller's, else one made here
                infer_request.id = headers.get(REQUEST_ID_HEADER) or new_request_id()
            remaining_s = context.time_remaining()
            if remaining_s is not None:
                infer_request.deadline_s = time.monotonic() + remaining_s
            response = await self._inference.infer(infer_request)
            labels.version = response.model_version
            trailing: list[tuple[str, str]] = []
            if request_id_problem(infer_request.id) is None:  # OIP's id is any string
                trailing.append((REQUEST_ID_HEADER, infer_request.id))
            variant = response.parameters.get(VARIANT_PARAMETER)
            if variant is not None:
                trailing.append((VARIANT_HEADER, str(variant)))
            context.set_trailing_metadata(trailing)
            return encode_infer_response(response)


# grpc-core keeps calls the application has not picked up yet in a queue of its own and,
# past max_pending_requests (default 1000; all of them past the hard limit, 3000), refuses
# new ones at random, which its clients see as a bare CANCELLED that no metric of ours
# counts. Raised far above any queue of ours, so that what is shed is shed by our bounds
# (AdmissionGate, the batchers' queues), with RESOURCE_EXHAUSTED and a message.
# Pending calls are bounded in practice by their deadlines and HTTP/2 flow control.
CORE_MAX_PENDING_REQUESTS = 100_000


def create_grpc_server(
    servicer: InferenceServicer,
    host: str,
    port: int,
    max_message_bytes: int,
    max_concurrent_rpcs: int,
    *,
    share_port: bool = False,
    max_pending_wait_s: float | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server bound to host:port; returns it and the port actually bound.
    `max_concurrent_rpcs`: calls running at once, beyond which calls are refused at once
    with RESOURCE_EXHAUSTED and counted (server/grpc_admission.py); so are calls that waited
    longer than `max_pending_wait_s` inside grpc-core (server/grpc_pending.py; None or 0:
    never). `share_port`: SO_REUSEPORT, for worker processes that all listen on one port.
    `credentials`: TLS (server/tls.py); None: plaintext."""
    # The server's channelz id is found as the one that appears when it is created.
    servers_before = channelz_server_ids() if max_pending_wait_s else set()
    # Admission first: a call refused for capacity is never decoded. Then a request that
    # does not decode is INVALID_ARGUMENT, not grpc's UNKNOWN and a traceback.
    admission = AdmissionGate(
        max_concurrent_rpcs, servicer.metrics, CleanDecoding(servicer.metrics)
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Fail loudly when the port is taken instead of sharing it with another process
            # (workers share it on purpose; their supervisor checked that it was free).
            ("grpc.so_reuseport", int(share_port)),
            ("grpc.server.max_pending_requests", CORE_MAX_PENDING_REQUESTS),
            ("grpc.server.max_pending_requests_hard_limit", CORE_MAX_PENDING_REQUESTS),
        ],
    )
    if max_pending_wait_s:
        created = channelz_server_ids() - servers_before
        if len(created) == 1:
            estimator = PendingWaitEstimator(
                channelz_calls_started(created.pop()), sample_interval_for(max_pending_wait_s)
            )
            admission.bound_pending_wait(estimator, max_pending_wait_s)
        else:  # another thread created a server at the same moment: cannot tell which
            log.warning("gRPC server not found in channelz: no pending-wait shedding")
    admission.install(server)  # every service added from here on is served through it
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    try:
        if credentials is None:
            return server, server.add_insecure_port(f"{host}:{port}")
        return server, server.add_secure_port(f"{host}:{port}", credentials)
    except RuntimeError:  # grpc's way of saying the address is taken or invalid
        raise OSError(f"cannot bind gRPC port {host}:{port}: address in use or invalid") from None
