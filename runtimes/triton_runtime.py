"""A model served by a Triton Inference Server, called over OIP gRPC (grpc.aio).

The gateway's own generated stubs speak to Triton: the protocol is the same, and
tritonclient's stubs cannot share a process with ours (both register `inference.*`
protobuf messages). One channel per model version, reused; tensors go as raw bytes; the
caller's deadline bounds every call. Transient UNAVAILABLE errors are retried with
exponential backoff inside the deadline; a circuit breaker stops calling a failing server
and probes it back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from switchyard.protos import open_inference_pb2 as pb
from switchyard.protos import open_inference_pb2_grpc as pb_grpc
from switchyard.runtimes import tracing
from switchyard.runtimes.base import ModelSignature, Runtime, TensorSpec
from switchyard.runtimes.circuit_breaker import CircuitBreaker, CircuitState
from switchyard.runtimes.datatypes import numpy_dtype, oip_datatype
from switchyard.runtimes.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ModelLoadError,
    ResourceExhausted,
    SwitchyardError,
    Unavailable,
)
from switchyard.runtimes.tensor_codec import decode_raw, encode_raw

log = logging.getLogger(__name__)

# Triton's answers that say something about the request, not about Triton's health.
CALLER_ERRORS: dict[grpc.StatusCode, type[SwitchyardError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


@dataclass(frozen=True, slots=True)
class TritonOptions:
    url: str  # host:port of Triton's gRPC endpoint
    model_name: str
    model_version: str = ""  # empty: Triton's default (latest) version
    timeout_s: float = 5.0  # per call, when the caller brings no earlier deadline
    connect_timeout_s: float = 30.0  # how long start-up waits for Triton to answer
    max_attempts: int = 3  # tries of one call while Triton is UNAVAILABLE
    backoff_initial_s: float = 0.02
    backoff_max_s: float = 0.5
    breaker_failures: int = 5  # consecutive failures that open the circuit
    breaker_open_s: float = 2.0  # how long an open circuit fails fast before a probe
    max_message_bytes: int = 64 * 1024 * 1024
    # TLS towards Triton: the CA its certificate must chain to; cert and key for mutual TLS.
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None


class TritonModel(Runtime):
    def __init__(
        self,
        options: TritonOptions,
        label: str,
        on_breaker_change: Callable[[CircuitState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._options = options
        self._label = label
        self._clock = clock
        self._breaker = CircuitBreaker(
            options.breaker_failures,
            options.breaker_open_s,
            clock=clock,
            on_change=on_breaker_change,
            # Every probe reports; should one ever not, it holds the others back no longer
            # than a call may take, rather than forever.
            probe_timeout_s=options.timeout_s,
        )
        self._credentials: grpc.ChannelCredentials | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.GRPCInferenceServiceStub | None = None
        self._signature: ModelSignature | None = None

    @property
    def breaker_state(self) -> CircuitState:
        return self._breaker.state

    def _channel_options(self) -> list[tuple[str, int]]:
        size = self._options.max_message_bytes
        return [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)]

    def _blocking_channel(self) -> grpc.Channel:
        url, options = self._options.url, self._channel_options()
        if self._credentials is None:
            return grpc.insecure_channel(url, options=options)
        return grpc.secure_channel(url, self._credentials, options=options)

    def _read_credentials(self, where: str) -> grpc.ChannelCredentials | None:
        opts = self._options
        if opts.tls_ca_file is None:
            return None
        files = {"ca_file": opts.tls_ca_file}
        if opts.tls_cert_file is not None and opts.tls_key_file is not None:
            files |= {"cert_file": opts.tls_cert_file, "key_file": opts.tls_key_file}
        pem: dict[str, bytes] = {}
        for key, path in files.items():
            try:
                pem[key] = path.read_bytes()
            except OSError as exc:
                raise ModelLoadError(
                    f"{where}: cannot read tls.{key} {path}: {exc.strerror or exc}"
                ) from None
        return grpc.ssl_channel_credentials(
            root_certificates=pem["ca_file"],
            private_key=pem.get("key_file"),
            certificate_chain=pem.get("cert_file"),
        )

    def load(self) -> ModelSignature:
        """Read the model's metadata and config from Triton (a blocking channel, at start)."""
        opts = self._options
        where = f"model '{self._label}': Triton at {opts.url}"
        # Read once, at load: a missing file fails the load, not the first request.
        self._credentials = self._read_credentials(where)
        with self._blocking_channel() as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=opts.connect_timeout_s)
            except grpc.FutureTimeoutError:
                hint = " (over TLS: check tls.ca_file and Triton's certificate)"
                raise ModelLoadError(
                    f"{where} did not answer within {opts.connect_timeout_s} s"
                    f"{hint if self._credentials is not None else ''}"
                ) from None
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            ids = {"name": opts.model_name, "version": opts.model_version}
            try:
                metadata = stub.ModelMetadata(pb.ModelMetadataRequest(**ids), timeout=10)
                config = stub.ModelConfig(pb.ModelConfigRequest(**ids), timeout=10).config
            except grpc.RpcError as exc:
                raise ModelLoadError(
                    f"{where} has no usable model '{opts.model_name}': {exc.details()}"
                ) from None
        self._signature = ModelSignature(
            platform=f"triton:{metadata.platform or config.backend or 'unknown'}",
            inputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in metadata.inputs),
            outputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in metadata.outputs),
            max_batch_size=config.max_batch_size,
        )
        for spec in (*self._signature.inputs, *self._signature.outputs):
            numpy_dtype(spec.datatype, spec.name)  # refuse datatypes numpy cannot hold now
        log.info("model '%s' is served by Triton at %s", self._label, opts.url)
        return self._signature

    def _connected_stub(self) -> pb_grpc.GRPCInferenceServiceStub:
        # Created on first use: an aio channel belongs to the event loop that runs it.
        if self._stub is None:
            if self._credentials is None and self._options.tls_ca_file is not None:
                # Never plaintext where TLS is configured, even without a load() first.
                self._credentials = self._read_credentials(f"model '{self._label}'")
            url, options = self._options.url, self._channel_options()
            self._channel = (
                grpc.aio.insecure_channel(url, options=options)
                if self._credentials is None
                else grpc.aio.secure_channel(url, self._credentials, options=options)
            )
            self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        return self._stub

    async def ready(self) -> bool:
        if self._breaker.state is CircuitState.OPEN:
            return False
        request = pb.ModelReadyRequest(
            name=self._options.model_name, version=self._options.model_version
        )
        try:
            # The generated stubs are untyped (no .pyi for *_pb2_grpc): name the answer's type.
            answer: pb.ModelReadyResponse = await self._connected_stub().ModelReady(
                request, timeout=1.0
            )
            return answer.ready
        except grpc.aio.AioRpcError:
            return False

    def _encode(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(
            model_name=self._options.model_name, model_version=self._options.model_version
        )
        for name, array in inputs.items():
            request.inputs.add(name=name, datatype=oip_datatype(array.dtype), shape=array.shape)
            request.raw_input_contents.append(encode_raw(array))
        for name in output_names:
            request.outputs.add(name=name)
        return request

    def _decode(self, response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
        if len(response.raw_output_contents) != len(response.outputs):
            raise Unavailable(f"model '{self._label}': Triton answered without raw outputs")
        return {
            tensor.name: decode_raw(tensor.name, tensor.datatype, tuple(tensor.shape), raw)
            for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        }

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
        deadline_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        request = self._encode(inputs, output_names)
        # The batch's span continues in Triton's trace (when tracing is on and Triton's is).
        trace_metadata = tuple(tracing.outgoing_headers().items())
        stub = self._connected_stub()
        opts = self._options
        give_up_s = self._clock() + opts.timeout_s
        if deadline_s is not None:
            give_up_s = min(give_up_s, deadline_s)
        backoff_s = opts.backoff_initial_s
        for attempt in range(1, opts.max_attempts + 1):
            if not self._breaker.allow():
                raise Unavailable(
                    f"model '{self._label}': Triton at {opts.url} is failing; calls are "
                    f"paused (circuit open), next probe in {self._breaker.retry_in_s():.1f} s"
                )
            remaining_s = give_up_s - self._clock()
            if remaining_s <= 0:
                self._breaker.record_abandoned()
                raise DeadlineExceeded(f"model '{self._label}': the deadline passed")
            try:
                response = await stub.ModelInfer(
                    request, timeout=remaining_s, metadata=trace_metadata or None
                )
            except asyncio.CancelledError:
                self._breaker.record_abandoned()
                raise
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code is grpc.StatusCode.UNAVAILABLE:
                    self._breaker.record_failure()
                    pause_s = min(backoff_s, opts.backoff_max_s)
                    if attempt < opts.max_attempts and self._clock() + pause_s < give_up_s:
                        await asyncio.sleep(pause_s)
                        backoff_s *= 2
                        continue
                    raise Unavailable(
                        f"model '{self._label}': Triton at {opts.url} is unavailable "
                        f"({exc.details()}) after {attempt} attempt(s)"
                    ) from None
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    self._breaker.record_failure()
                    raise DeadlineExceeded(
                        f"model '{self._label}': Triton did not answer within the deadline"
                    ) from None
                self._breaker.record_success()  # it answered: the server itself is healthy
                error = CALLER_ERRORS.get(code, Unavailable)
                raise error(
                    f"model '{self._label}': Triton said {code.name}: {exc.details()}"
                ) from None
            except Exception as exc:
                # Not an answer of Triton's (the client failed: a closed channel, say): a
                # failure all the same, so that a probe reports and the circuit reopens.
                self._breaker.record_failure()
                log.warning(
                    "model '%s': calling Triton at %s failed: %r", self._label, opts.url, exc
                )
                raise Unavailable(
                    f"model '{self._label}': the call to Triton at {opts.url} failed in the "
                    f"client ({type(exc).__name__}); retry later"
                ) from exc
            self._breaker.record_success()
            return self._decode(response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None
