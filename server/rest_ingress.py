"""Open Inference Protocol v2 over REST: a plain ASGI app (served by uvicorn).

Takes JSON tensors and Triton's binary tensor data extension: with the header
`Inference-Header-Content-Length: N`, the body's first N bytes are the JSON request and
the rest are the inputs' raw bytes, in input order, each input's share given by its
`binary_data_size` parameter. Outputs come back the same way when asked for
(`binary_data` on an output, or `binary_data_output` on the request).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

from switchyard.runtimes import tracing
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument, NotFound, PayloadTooLarge
from switchyard.runtimes.tensor_codec import decode_raw, encode_raw
from switchyard.server.admin_api import AdminApi
from switchyard.server.caller import Caller
from switchyard.server.error_status import HttpError, http_status, require_method
from switchyard.server.feedback import (
    REQUEST_ID_HEADER,
    FeedbackLog,
    new_request_id,
    parse_feedback_json,
    request_id_problem,
)
from switchyard.server.feedback import REST_PATH as FEEDBACK_PATH
from switchyard.server.inference import InferenceService
from switchyard.server.json_body import field, parse_object
from switchyard.server.metrics import ServerMetrics
from switchyard.server.model_control import IndexEntry
from switchyard.server.off_loop import decode_off_loop
from switchyard.server.recommend import Recommender
from switchyard.server.recommend_ingress import (
    RECOMMEND_REST_SPAN,
    REST_PATH,
    join_feedback,
    parse_recommend_json,
    recommend_json,
)
from switchyard.server.repository_api import RepositoryApi
from switchyard.server.routing import VARIANT_HEADER, VARIANT_PARAMETER
from switchyard.server.tensors import checked_element_count, decode_json_values, json_values
from switchyard.server.types import InferInput, InferRequest, InferResponse

log = logging.getLogger(__name__)
PROTOCOL = "rest"
INFER_SPAN = "POST /v2/models/{model}/infer"  # OpenTelemetry's HTTP span name: the route
HEADER_LENGTH = b"inference-header-content-length"
REQUEST_ID_BYTES = REQUEST_ID_HEADER.encode()
# Bodies above these sizes are inflated / parsed off the event loop (server/off_loop.py): a
# 4 KiB gzip body can inflate to 4 MiB, and parsing a 256 KiB JSON body and converting its
# values takes a few milliseconds. Smaller ones are not worth the thread hop.
INLINE_INFLATE_MAX_BYTES = 4 * 1024
INLINE_PARSE_MAX_BYTES = 256 * 1024
# Output of one zlib call while inflating: the size limit is checked after each.
INFLATE_CHUNK_BYTES = 1024 * 1024

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _text_headers(headers: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}


def _index_json(entry: IndexEntry) -> dict[str, str]:
    document = {"name": entry.name, "version": entry.version, "state": entry.state}
    if entry.reason:
        document["reason"] = entry.reason
    return document


def proto_json(message: Message) -> dict[str, Any]:
    """A protobuf message as Triton's REST API writes it: field names as in the .proto."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ):
        self.status = status
        self.body = body
        self.headers = headers or []

    @classmethod
    def json(cls, status: int, document: Any) -> Response:
        return cls(status, orjson.dumps(document), [(b"content-type", b"application/json")])


class RestApp:
    def __init__(
        self,
        inference: InferenceService,
        metrics: ServerMetrics,
        admin: AdminApi | None = None,
        recommender: Recommender | None = None,
        repository: RepositoryApi | None = None,
        feedback: FeedbackLog | None = None,
    ) -> None:
        self._feedback = feedback
        self._inference = inference
        self._metrics = metrics
        self._admin = admin
        self._recommender = recommender
        self._repository = repository
        self._max_bytes = inference.max_request_size_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # uvicorn runs with lifespan off; websockets are not served
        try:
            response = await self._dispatch(scope, receive)
        except Exception as exc:
            status, message, error_headers = http_status(exc)
            if status == 500:
                log.exception("%s %s failed", scope["method"], scope["path"])
            response = Response.json(status, {"error": message})
            response.headers.extend(error_headers)
        headers = [*response.headers, (b"content-length", str(len(response.body)).encode())]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _dispatch(self, scope: Scope, receive: Receive) -> Response:
        parts = scope["path"].strip("/").split("/")
        method = scope["method"]
        if parts[:2] == ["admin", "v1"] and self._admin is not None:
            headers = dict(scope["headers"])
            caller = Caller.from_asgi(scope, _text_headers(headers))
            actor = self._admin.authorize(caller, method, parts[2:])  # before reading any body
            body = await self._read_body(headers, receive) if method in ("PUT", "POST") else b""
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            document = await self._admin.handle(method, parts[2:], actor, body, query)
            return Response.json(200, document)
        if scope["path"] == REST_PATH and self._recommender is not None:
            require_method(method, "POST")
            return await self._recommend(scope, receive)
        if scope["path"] == FEEDBACK_PATH and self._recommender is not None:
            require_method(method, "POST")
            return await self._post_feedback(scope, receive)
        if parts[0] != "v2":
            raise NotFound(f"no route for {client_text(scope['path'])}; the API lives under /v2")
        if parts == ["v2"]:
            require_method(method, "GET")
            meta = self._inference.server_metadata()
            document = {"name": meta.name, "version": meta.version, "extensions": meta.extensions}
            return Response.json(200, document)
        if len(parts) == 3 and parts[1] == "health" and parts[2] in ("live", "ready"):
            require_method(method, "GET")
            ok = self._inference.live() if parts[2] == "live" else self._inference.ready()
            return Response(200) if ok else Response.json(503, {"error": "server is not ready"})
        if len(parts) >= 3 and parts[1] == "repository" and self._repository is not None:
            require_method(method, "POST")
            return await self._repository_call(scope, receive, parts[2:])
        if len(parts) >= 3 and parts[1] == "models":
            name, version, action = _model_route(parts, scope["path"])
            if action == "":
                require_method(method, "GET")
                return Response.json(200, self._inference.model_metadata(name, version).as_json())
            if action == "config":
                require_method(method, "GET")
                config = self._inference.model_config(name, version)
                return Response.json(200, proto_json(config))
            if action == "ready":
                require_method(method, "GET")
                if await self._inference.model_ready(name, version):
                    return Response(200)
                return Response.json(503, {"error": f"'{client_text(name)}' is not ready"})
            require_method(method, "POST")
            return await self._infer(scope, receive, name, version)
        raise NotFound(f"no route for {client_text(scope['path'])}")

    async def _infer(self, scope: Scope, receive: Receive, name: str, version: str) -> Response:
        headers = dict(scope["headers"])
        text_headers = _text_headers(headers)
        with (
            self._metrics.track(PROTOCOL, self._inference.model_label) as labels,
            tracing.request_span(INFER_SPAN, text_headers, {"switchyard.model": name}),
        ):
            labels.model = name
            body = await self._read_body(headers, receive)
            request, binary_outputs = await _parse_off_loop_if_large(
                len(body),
                parse_infer_request,
                body,
                headers.get(HEADER_LENGTH),
                name,
                version,
                self._max_bytes,
            )
            request.headers = text_headers
            if not request.id:
                request.id = text_headers.get(REQUEST_ID_HEADER) or new_request_id()
            response = await self._inference.infer(request)
            labels.version = response.model_version
            encoded = encode_infer_response(response, binary_outputs)
            if request_id_problem(request.id) is None:  # OIP's id is any string
                encoded.headers.append((REQUEST_ID_BYTES, request.id.encode()))
            variant = response.parameters.get(VARIANT_PARAMETER)
            if variant is not None:
                encoded.headers.append((VARIANT_HEADER.encode(), str(variant).encode()))
            return encoded

    async def _repository_call(self, scope: Scope, receive: Receive, route: list[str]) -> Response:
        """POST /v2/repository/index, /v2/repository/models/{name}/load and .../unload."""
        assert self._repository is not None
        headers = dict(scope["headers"])
        if route == ["index"]:
            body = parse_object(await self._read_body(headers, receive) or b"{}")
            ready = body.get("ready", False)
            if not isinstance(ready, bool):
                raise InvalidArgument("'ready' must be true or false")
            entries = self._repository.index(ready)
            return Response.json(200, [_index_json(entry) for entry in entries])
        if len(route) == 3 and route[0] == "models" and route[2] in ("load", "unload"):
            caller = Caller.from_asgi(scope, _text_headers(headers))
            actor = self._repository.authorize(caller, route[2])  # before reading any body
            body = parse_object(await self._read_body(headers, receive) or b"{}")
            parameters = body.get("parameters", {})
            if not isinstance(parameters, dict):
                raise InvalidArgument("'parameters' must be an object")
            if route[2] == "load":
                await self._repository.load(route[1], parameters, actor)
            else:
                await self._repository.unload(route[1], parameters, actor)
            return Response(200)
        raise NotFound(f"no route for {client_text(scope['path'])}")

    async def _recommend(self, scope: Scope, receive: Receive) -> Response:
        assert self._recommender is not None
        headers = dict(scope["headers"])
        text_headers = _text_headers(headers)
        with (
            self._metrics.track(PROTOCOL, self._inference.model_label) as labels,
            tracing.request_span(RECOMMEND_REST_SPAN, text_headers),
        ):
            body = await self._read_body(headers, receive)
            request = await _parse_off_loop_if_large(
                len(body), parse_recommend_json, body, text_headers
            )
            labels.model = request.endpoint
            response = await self._recommender.recommend(request)
            labels.version = response.model_version
            encoded = Response.json(200, recommend_json(response))
            encoded.headers.append((REQUEST_ID_BYTES, response.request_id.encode()))
            return encoded

    async def _post_feedback(self, scope: Scope, receive: Receive) -> Response:
        body = await self._read_body(dict(scope["headers"]), receive)
        try:
            feedback = await _parse_off_loop_if_large(len(body), parse_feedback_json, body)
        except InvalidArgument:
            if self._feedback is not None:
                self._feedback.count_invalid()
            raise
        result = await join_feedback(self._feedback, feedback)
        return Response.json(200, result.as_json())

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
            raise PayloadTooLarge(
                f"request body of {int(declared)} bytes is over the maximum of {self._max_bytes}"
            )
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidArgument("client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_bytes:
                raise PayloadTooLarge(
                    f"request body is over the maximum of {self._max_bytes} bytes"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        wbits = _inflate_wbits(encoding)
        if wbits is None:
            return body
        if len(body) <= INLINE_INFLATE_MAX_BYTES:
            return _inflate(body, wbits, encoding, self._max_bytes)
        return await decode_off_loop(_inflate, body, wbits, encoding, self._max_bytes)


Parsed = TypeVar("Parsed")


async def _parse_off_loop_if_large(
    size_bytes: int, parse: Callable[..., Parsed], *args: Any
) -> Parsed:
    """parse(*args): on the loop for a small body, off it for a large one."""
    if size_bytes <= INLINE_PARSE_MAX_BYTES:
        return parse(*args)
    return await decode_off_loop(parse, *args)


def _model_route(parts: list[str], path: str) -> tuple[str, str, str]:
    """(model, version, action) from /v2/models/{m}[/versions/{v}][/ready|/infer|/config]."""
    name, rest = parts[2], parts[3:]
    version = ""
    if rest[:1] == ["versions"]:
        if len(rest) < 2 or not rest[1]:
            raise NotFound(f"no route for {client_text(path)}: the version is missing")
        version, rest = rest[1], rest[2:]
    if rest == []:
        return name, version, ""
    if rest in (["ready"], ["infer"], ["config"]):
        return name, version, rest[0]
    raise NotFound(f"no route for {client_text(path)}")


def _inflate_wbits(encoding: bytes) -> int | None:
    """zlib's wbits for a Content-Encoding; None for none; 415 for one not supported."""
    if encoding in (b"identity", b""):
        return None
    wbits = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise HttpError(
            415,
            f"Content-Encoding {client_text(encoding.decode('latin-1'))!r} is not supported "
            "(gzip, deflate)",
        )
    return wbits


def _inflate(body: bytes, wbits: int, encoding: bytes, max_bytes: int) -> bytes:
    """The inflated body, INFLATE_CHUNK_BYTES of output per zlib call, refused as soon as it
    grows over `max_bytes`: a small bomb never costs more than the limit."""
    name = encoding.decode("latin-1")
    decompressor = zlib.decompressobj(wbits)
    parts: list[bytes] = []
    size_bytes = 0
    pending = body
    try:
        while not decompressor.eof:
            part = decompressor.decompress(pending, INFLATE_CHUNK_BYTES)
            pending = decompressor.unconsumed_tail
            if not part and not pending:
                break  # all input used and nothing more comes out: the stream is cut short
            size_bytes += len(part)
            if size_bytes > max_bytes:
                raise PayloadTooLarge(
                    f"decompressed request body is over the maximum of {max_bytes} bytes"
                )
            parts.append(part)
    except zlib.error as exc:
        raise InvalidArgument(f"request body is not valid {name} data: {exc}") from None
    if not decompressor.eof:
        raise InvalidArgument(f"request body is not valid {name} data: it ends early")
    return b"".join(parts)


def _shape(tensor: dict[str, Any], where: str) -> tuple[int, ...]:
    shape = field(tensor, "shape", list, where)
    if not all(isinstance(dim, int) and not isinstance(dim, bool) for dim in shape):
        raise InvalidArgument(
            f"{where}: 'shape' must be a list of integers, got {client_text(shape)}"
        )
    return tuple(shape)


def parse_infer_request(
    body: bytes,
    header_length: bytes | None,
    model_name: str,
    model_version: str,
    max_bytes: int,
) -> tuple[InferRequest, set[str] | bool]:
    """The request, and which outputs to return as binary: a set of names, or a bool for
    all of them when the request names no outputs."""
    json_part, binary = memoryview(body), memoryview(b"")
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidArgument(
                "Inference-Header-Content-Length "
                f"{client_text(header_length.decode(errors='replace'))!r} "
                f"must be a byte count within the {len(body)}-byte body"
            )
        split = int(header_length)
        json_part, binary = json_part[:split], json_part[split:]
    document = parse_object(json_part)
    parameters = field(document, "parameters", dict, "request", {})
    inputs, offset = [], 0
    for index, tensor in enumerate(field(document, "inputs", list, "request")):
        where = f"inputs[{index}]"
        if not isinstance(tensor, dict):
            raise InvalidArgument(f"{where} must be a JSON object")
        name = field(tensor, "name", str, where)
        where = f"tensor '{client_text(name)}'"
        datatype = field(tensor, "datatype", str, where)
        shape = _shape(tensor, where)
        checked_element_count(name, datatype, shape, max_bytes)
        size = field(tensor, "parameters", dict, where, {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidArgument(
                    f"{where}: binary_data_size {client_text(size)} does not fit in the "
                    f"{len(binary) - offset} "
                    "binary bytes left in the body"
                )
            data = decode_raw(name, datatype, shape, binary[offset : offset + size])
            offset += size
        else:
            data = decode_json_values(name, datatype, shape, field(tensor, "data", list, where))
        inputs.append(InferInput(name, datatype, shape, data))
    if offset != len(binary):
        raise InvalidArgument(
            f"{len(binary) - offset} binary bytes follow the inputs that no binary_data_size claims"
        )
    # binary_data_output is the default for every output; an output's binary_data wins.
    binary_by_default = parameters.get("binary_data_output", False) is True
    output_names: list[str] = []
    binary_outputs: set[str] = set()
    for index, output in enumerate(field(document, "outputs", list, "request", [])):
        if not isinstance(output, dict):
            raise InvalidArgument(f"outputs[{index}] must be a JSON object")
        out_name = field(output, "name", str, f"outputs[{index}]")
        output_names.append(out_name)
        out_params = field(output, "parameters", dict, f"output '{client_text(out_name)}'", {})
        if out_params.get("binary_data", binary_by_default) is True:
            binary_outputs.add(out_name)
    request_id = field(document, "id", str, "request", "")
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        id=request_id,
        inputs=inputs,
        output_names=output_names,
        parameters={k: v for k, v in parameters.items() if isinstance(v, bool | int | float | str)},
    ), (binary_by_default if not output_names else binary_outputs)


def encode_infer_response(response: InferResponse, binary_outputs: set[str] | bool) -> Response:
    outputs, chunks = [], []
    for output in response.outputs:
        tensor: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.shape),
        }
        if binary_outputs is True or (binary_outputs and output.name in binary_outputs):
            raw = encode_raw(output.data)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = json_values(output.data)
        outputs.append(tensor)
    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Response(200, header, [(b"content-type", b"application/json")])
    return Response(
        200,
        b"".join([header, *chunks]),
        [
            (b"content-type", b"application/octet-stream"),
            (HEADER_LENGTH, str(len(header)).encode()),
        ],
    )
