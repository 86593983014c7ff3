"""One load request of each kind: OIP ModelInfer over gRPC, Recommend over gRPC or REST.

Clients prepare their request bytes once (Recommend rotates through users), so the hot loop
costs the client process as little as possible: gRPC calls send pre-serialized bytes and do
not parse the answer (its status says enough). `check()` sends one request through the
generated stub (or JSON parser) and validates the answer before any load is sent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import grpc
import numpy as np

from switchyard.protos import open_inference_pb2 as oip_pb
from switchyard.protos import open_inference_pb2_grpc as oip_grpc
from switchyard.protos import recommend_pb2 as rec_pb
from switchyard.protos import recommend_pb2_grpc as rec_grpc

KINDS = ("grpc", "recommend-grpc", "recommend-rest")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
FP32_BYTES = 4
OIP_SERVICE = oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
RECOMMEND_SERVICE = rec_pb.DESCRIPTOR.services_by_name["Recommender"].full_name


@dataclass(frozen=True)
class RequestSpec:
    """What every request of a run looks like; `url` is host:port."""

    kind: str = "grpc"
    url: str = "127.0.0.1:8001"
    model: str = "ranker"
    input_name: str = "features"
    rows: int = 1
    columns: int = 16
    endpoint: str = "recs"
    users: int = 1000  # Recommend: user ids u0..u{users-1}, one after another
    candidates: int = 100  # Recommend: item ids i0..i{candidates-1}
    k: int = 10
    timeout_s: float = 5.0


class Client(Protocol):
    async def call(self) -> None: ...

    async def check(self) -> str:
        """Send one request, validate the answer, describe it; raises when it is wrong."""
        ...

    async def close(self) -> None: ...


class HttpStatusError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


def error_kind(exc: BaseException) -> str:
    """A short label to count failures by: the gRPC status, the HTTP status or the type."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    if isinstance(exc, HttpStatusError):
        return f"HTTP {exc.status}"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    return type(exc).__name__


def _channel(url: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        url,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )


class OipClient:
    """ModelInfer with `rows` x `columns` FP32 in raw_input_contents, all outputs returned."""

    def __init__(self, spec: RequestSpec) -> None:
        self._spec = spec
        rng = np.random.default_rng(0)
        features = rng.normal(size=(spec.rows, spec.columns)).astype(np.float32)
        tensor = oip_pb.ModelInferRequest.InferInputTensor(
            name=spec.input_name, datatype="FP32", shape=list(features.shape)
        )
        self._request = oip_pb.ModelInferRequest(
            model_name=spec.model, inputs=[tensor], raw_input_contents=[features.tobytes()]
        )
        self._payload = self._request.SerializeToString()
        self._channel = _channel(spec.url)
        # No serializers: bytes in, bytes out (the stub would serialize the same bytes anew).
        self._infer: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            f"/{OIP_SERVICE}/ModelInfer"
        )

    async def call(self) -> None:
        await self._infer(self._payload, timeout=self._spec.timeout_s)

    async def check(self) -> str:
        stub = oip_grpc.GRPCInferenceServiceStub(self._channel)
        answer = await stub.ModelInfer(self._request, timeout=self._spec.timeout_s)
        sizes = [len(raw) for raw in answer.raw_output_contents]
        if not sizes or any(size != self._spec.rows * FP32_BYTES for size in sizes):
            raise ValueError(f"expected one FP32 per row in each raw output, got sizes {sizes}")
        names = ", ".join(output.name for output in answer.outputs)
        return f"outputs {names}: {sum(sizes)} bytes; request {len(self._payload)} bytes"

    async def close(self) -> None:
        await self._channel.close()


def _recommend_requests(spec: RequestSpec) -> list[rec_pb.RecommendRequest]:
    items = [f"i{n}" for n in range(spec.candidates)]
    return [
        rec_pb.RecommendRequest(
            endpoint=spec.endpoint, user_id=f"u{n}", candidate_ids=items, k=spec.k
        )
        for n in range(spec.users)
    ]


def _check_ranked(item_count: int, spec: RequestSpec) -> None:
    expected = min(spec.k, spec.candidates) if spec.k else spec.candidates
    if item_count != expected:
        raise ValueError(f"expected {expected} ranked items, got {item_count}")


class RecommendGrpcClient:
    def __init__(self, spec: RequestSpec) -> None:
        self._spec = spec
        self._requests = _recommend_requests(spec)
        self._payloads = itertools.cycle([r.SerializeToString() for r in self._requests])
        self._channel = _channel(spec.url)
        self._recommend: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            f"/{RECOMMEND_SERVICE}/Recommend"
        )

    async def call(self) -> None:
        await self._recommend(next(self._payloads), timeout=self._spec.timeout_s)

    async def check(self) -> str:
        stub = rec_grpc.RecommenderStub(self._channel)
        answer = await stub.Recommend(self._requests[0], timeout=self._spec.timeout_s)
        _check_ranked(len(answer.items), self._spec)
        return f"{len(answer.items)} items from {answer.model_name}:{answer.model_version}"

    async def close(self) -> None:
        await self._channel.close()


class RecommendRestClient:
    """POST /v1/recommend with JSON; one HTTP/1.1 connection per request in flight."""

    def __init__(self, spec: RequestSpec) -> None:
        self._spec = spec
        self._url = f"http://{spec.url}/v1/recommend"
        self._bodies = [
            json.dumps(
                {
                    "endpoint": r.endpoint,
                    "user_id": r.user_id,
                    "candidate_ids": list(r.candidate_ids),
                    "k": r.k,
                }
            ).encode()
            for r in _recommend_requests(spec)
        ]
        self._next_body = itertools.cycle(self._bodies)
        # limit=0: no pool limit here; the load generator bounds the requests in flight.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=spec.timeout_s),
            headers={"content-type": "application/json"},
        )

    async def _post(self, body: bytes) -> bytes:
        async with self._session.post(self._url, data=body) as response:
            payload = await response.read()
            if response.status != 200:
                raise HttpStatusError(response.status, payload.decode(errors="replace"))
            return payload

    async def call(self) -> None:
        await self._post(next(self._next_body))

    async def check(self) -> str:
        answer = json.loads(await self._post(self._bodies[0]))
        _check_ranked(len(answer["items"]), self._spec)
        return f"{len(answer['items'])} items from {answer['model_name']}:{answer['model_version']}"

    async def close(self) -> None:
        await self._session.close()


def open_client(spec: RequestSpec) -> Client:
    """A client of `spec.kind`; call inside the event loop that will use it."""
    if spec.kind == "grpc":
        return OipClient(spec)
    if spec.kind == "recommend-grpc":
        return RecommendGrpcClient(spec)
    if spec.kind == "recommend-rest":
        return RecommendRestClient(spec)
    raise ValueError(f"unknown request kind {spec.kind!r}; expected one of {KINDS}")


async def check_once(spec: RequestSpec) -> str:
    client = open_client(spec)
    try:
        return await client.check()
    finally:
        await client.close()
