"""Property tests of the request decoders: whatever a client sends either decodes or is
refused as the caller's fault (InvalidArgument / PayloadTooLarge), never anything else."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchyard.protos import open_inference_pb2 as pb
from switchyard.runtimes.datatypes import OIP_TO_NUMPY
from switchyard.runtimes.errors import InvalidArgument, PayloadTooLarge
from switchyard.server.grpc_ingress import CONTENTS_FIELD, decode_infer_request
from switchyard.server.rest_ingress import parse_infer_request

MAX_BYTES = 64 * 1024
CALLER_FAULTS = (InvalidArgument, PayloadTooLarge)
DATATYPES = [*OIP_TO_NUMPY, "BF16", "FLOAT", ""]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Dims around every boundary: zero, small, just over what MAX_BYTES holds, int64's edges.
dims = st.one_of(
    st.integers(-2, 5),
    st.sampled_from([MAX_BYTES // 4, MAX_BYTES // 4 + 1, 10**12, 2**63 - 1, -(2**63)]),
)
# numpy holds 64 dims at most: longer shapes find any place a shape reaches numpy unchecked.
shapes = st.lists(dims, max_size=70)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=30,
)


def _tensor(draw: st.DrawFn) -> dict[str, Any]:
    tensor: dict[str, Any] = {
        "name": draw(st.one_of(st.text(max_size=10), json_values)),
        "datatype": draw(st.one_of(st.sampled_from(DATATYPES), json_values)),
        "shape": draw(st.one_of(shapes, json_values)),
    }
    shape = tensor["shape"]
    fits = isinstance(shape, list) and all(type(d) is int and 0 <= d <= 64 for d in shape)
    if fits and math.prod(shape) <= 64 and draw(st.booleans()):
        # As many values as the shape needs, so that decoding goes all the way.
        tensor["data"] = draw(
            st.lists(json_scalars, min_size=math.prod(shape), max_size=math.prod(shape))
        )
    elif draw(st.booleans()):
        tensor["data"] = draw(st.one_of(st.lists(json_values, max_size=20), json_values))
    if draw(st.booleans()):
        tensor["parameters"] = {
            "binary_data_size": draw(st.one_of(st.integers(-2, 64), json_values))
        }
    return tensor


@st.composite
def rest_bodies(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """Request-shaped JSON with any value in any place, or any bytes at all, optionally with
    a binary tail and a header length."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200)), None
    document: dict[str, Any] = {
        "inputs": draw(st.lists(st.builds(dict) | st.composite(_tensor)(), max_size=3))
    }
    if draw(st.booleans()):
        document["outputs"] = draw(st.lists(json_values, max_size=3))
    if draw(st.booleans()):
        document["parameters"] = draw(json_values)
    if draw(st.booleans()):
        document["id"] = draw(json_values)
    header = json.dumps(document).encode()  # any int; orjson stops at 64 bits
    tail = draw(st.binary(max_size=64))
    header_length = draw(
        st.sampled_from(
            [
                None,
                str(len(header)).encode(),
                b"-1",
                b"x",
                str(len(header) + len(tail) + 1).encode(),
            ]
        )
    )
    return header + tail if header_length is not None else header, header_length


@given(rest_bodies())
@FUZZ
def test_rest_decoder_decodes_or_blames_the_caller(case: tuple[bytes, bytes | None]) -> None:
    body, header_length = case
    with contextlib.suppress(*CALLER_FAULTS):
        parse_infer_request(body, header_length, "m", "", MAX_BYTES)


@st.composite
def grpc_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=draw(st.text(max_size=10)))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        datatype = draw(st.sampled_from(DATATYPES))
        tensor = message.inputs.add(
            name=draw(st.text(max_size=10)),
            datatype=datatype,
            shape=draw(st.lists(dims.filter(lambda d: -(2**63) <= d < 2**63), max_size=70)),
        )
        if raw:
            message.raw_input_contents.append(draw(st.binary(max_size=64)))
        field = CONTENTS_FIELD.get(datatype) or draw(
            st.sampled_from(sorted(set(CONTENTS_FIELD.values())))
        )
        if draw(st.booleans()):
            contents = getattr(tensor.contents, field)
            contents.extend(draw(_contents_values(field)))
    if draw(st.booleans()) and message.inputs:
        message.raw_input_contents.append(b"\x00" * draw(st.integers(0, 8)))  # one too many
    return message


def _contents_values(field: str) -> st.SearchStrategy[list[Any]]:
    if field == "bool_contents":
        return st.lists(st.booleans(), max_size=20)
    if field == "bytes_contents":
        return st.lists(st.binary(max_size=8), max_size=20)
    if field in ("fp32_contents", "fp64_contents"):
        return st.lists(st.floats(width=32), max_size=20)
    if field in ("int_contents",):
        return st.lists(st.integers(-(2**31), 2**31 - 1), max_size=20)
    if field in ("uint_contents",):
        return st.lists(st.integers(0, 2**32 - 1), max_size=20)
    if field == "int64_contents":
        return st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20)
    return st.lists(st.integers(0, 2**64 - 1), max_size=20)


@given(grpc_requests())
@FUZZ
def test_grpc_decoder_decodes_or_blames_the_caller(message: pb.ModelInferRequest) -> None:
    with contextlib.suppress(*CALLER_FAULTS):
        decode_infer_request(message, MAX_BYTES)


@given(grpc_requests(), st.data())
@FUZZ
def test_mutated_grpc_wire_bytes_decode_or_blame_the_caller(
    message: pb.ModelInferRequest, data: st.DataObject
) -> None:
    wire = bytearray(message.SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        if wire:
            wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
    try:
        mutated = pb.ModelInferRequest.FromString(bytes(wire))
    except DecodeError:
        return  # the gRPC ingress answers it INVALID_ARGUMENT (tested against the gateway)
    with contextlib.suppress(*CALLER_FAULTS):
        decode_infer_request(mutated, MAX_BYTES)
