from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from switchyard.runtimes.datatypes import OIP_TO_NUMPY, oip_datatype
from switchyard.runtimes.errors import InvalidArgument
from switchyard.runtimes.tensor_codec import decode_raw, encode_raw
from switchyard.server.tensors import (
    CONVERT_CHUNK_VALUES,
    MAX_TENSOR_DIMS,
    checked_element_count,
    decode_json_values,
    decode_values,
)

FIXED_SIZE = [name for name in OIP_TO_NUMPY if name != "BYTES"]


@given(
    datatype=st.sampled_from(FIXED_SIZE),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5),
    data=st.data(),
)
def test_raw_round_trip(datatype: str, shape: tuple[int, ...], data: st.DataObject) -> None:
    array = data.draw(hnp.arrays(OIP_TO_NUMPY[datatype], shape))
    decoded = decode_raw("t", datatype, shape, encode_raw(array))
    np.testing.assert_array_equal(decoded, array)
    assert decoded.dtype == array.dtype and oip_datatype(decoded.dtype) == datatype


@given(st.lists(st.binary(max_size=20), min_size=0, max_size=12))
def test_bytes_round_trip(elements: list[bytes]) -> None:
    array = np.array(elements + [b""] * 0, dtype=object).reshape(len(elements))
    decoded = decode_raw("t", "BYTES", (len(elements),), encode_raw(array))
    assert decoded.tolist() == elements


def test_bytes_malformed() -> None:
    with pytest.raises(InvalidArgument, match="length prefix"):
        decode_raw("t", "BYTES", (1,), b"\x01\x00")
    with pytest.raises(InvalidArgument, match="past the end"):
        decode_raw("t", "BYTES", (1,), b"\x09\x00\x00\x00abc")
    with pytest.raises(InvalidArgument, match="1 BYTES elements, but shape \\[2\\] needs 2"):
        decode_raw("t", "BYTES", (2,), b"\x01\x00\x00\x00a")


def test_values_nested_and_flat() -> None:
    flat = decode_values("t", "INT32", (2, 2), [1, 2, 3, 4])
    nested = decode_values("t", "INT32", (2, 2), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(flat, nested)
    assert decode_values("t", "BYTES", (2,), ["a", "b"]).tolist() == [b"a", b"b"]
    with pytest.raises(InvalidArgument, match="'t'.*3 values"):
        decode_values("t", "FP32", (2, 2), [1, 2, 3])


def test_declared_size_checks() -> None:
    assert checked_element_count("t", "FP32", (3, 4), 48) == 12
    with pytest.raises(
        InvalidArgument, match="'t'.*49 elements.*196 bytes.*maximum request size of 48"
    ):
        checked_element_count("t", "FP32", (7, 7), 48)
    with pytest.raises(InvalidArgument, match="negative"):
        checked_element_count("t", "FP32", (-1, 4), 48)
    with pytest.raises(InvalidArgument, match="unsupported datatype 'BF16'"):
        checked_element_count("t", "BF16", (1,), 48)
    # 2**70 elements would overflow a C integer; Python ints catch it as too large instead.
    with pytest.raises(InvalidArgument, match="maximum request size"):
        checked_element_count("t", "UINT8", (2**35, 2**35), 2**62)


def test_a_zero_element_shape_with_a_huge_dimension_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="'t': shape .* has no elements, .* 1000000000000"):
        checked_element_count("t", "FP32", (0, 10**12), 48)
    # Each dim within bounds, their product not: numpy itself refuses such a shape.
    with pytest.raises(InvalidArgument, match="no elements"):
        checked_element_count("t", "BOOL", (0, 128, 16384, 16384, 16384, 16384), 2**16)
    # What a request could fill is accepted, with or without a zero beside it.
    assert checked_element_count("t", "FP32", (0, 12), 48) == 0
    assert checked_element_count("t", "FP32", (3, 0, 4), 48) == 0
    assert checked_element_count("t", "BYTES", (12,), 48) == 12  # 4-byte length prefixes


def test_too_many_dimensions_are_refused_before_numpy_sees_them() -> None:
    assert checked_element_count("t", "FP32", (1,) * MAX_TENSOR_DIMS, 48) == 1
    with pytest.raises(InvalidArgument, match="'t': shape has 10000 dimensions; at most 32"):
        checked_element_count("t", "FP32", (1,) * 10000, 48)


@pytest.mark.parametrize(
    ("datatype", "values", "sent"),
    [
        ("FP32", [1.0, None], "null"),
        ("FP32", [True, 1.0], "true/false"),
        ("FP32", ["1.5", 1.0], "string"),
        ("FP64", [[1.0], [{"a": 1}]], "object"),
        ("INT64", [1, 2.5], "number"),
        ("BOOL", [1, 0], "integer"),
        ("BYTES", [5, "a"], "integer"),
        ("BYTES", [None, "a"], "null"),
    ],
)
def test_json_values_of_the_wrong_type_are_refused(
    datatype: str, values: list[object], sent: str
) -> None:
    with pytest.raises(InvalidArgument, match=f"'t': {datatype} data must be JSON .*got {sent}"):
        decode_json_values(
            "t", datatype, (2,) if not isinstance(values[0], list) else (2, 1), values
        )


def test_json_values_of_the_right_types_decode() -> None:
    assert decode_json_values("t", "FP32", (2,), [1, 2.5]).tolist() == [1.0, 2.5]
    assert decode_json_values("t", "BOOL", (2,), [True, False]).tolist() == [True, False]
    assert decode_json_values("t", "BYTES", (1, 2), [["a", "b"]]).tolist() == [[b"a", b"b"]]
    assert decode_json_values("t", "UINT8", (1,), [255]).tolist() == [255]
    with pytest.raises(InvalidArgument, match="'t': data is not a list of UINT8 values"):
        decode_json_values("t", "UINT8", (1,), [256])
    with pytest.raises(InvalidArgument, match="nested deeper than its shape"):
        decode_json_values("t", "FP32", (2,), [[1.0], [2.0]])
    with pytest.raises(InvalidArgument, match="'t': unsupported datatype 'BF16'"):
        decode_json_values("t", "BF16", (1,), [1.0])


def test_long_flat_values_convert_in_slices_to_the_same_array() -> None:
    count = CONVERT_CHUNK_VALUES * 2 + 3
    values = [float(i % 1000) for i in range(count)]
    decoded = decode_values("t", "FP32", (count,), values)
    np.testing.assert_array_equal(decoded, np.asarray(values, dtype=np.float32))
    mixed: list[object] = [*values[:-1], [1.0]]
    with pytest.raises(InvalidArgument, match="'t': data is not a list of FP32 values"):
        decode_values("t", "FP32", (count,), mixed)


def test_messages_echo_a_bounded_prefix_of_a_long_name() -> None:
    name = "n" * 20_000
    with pytest.raises(InvalidArgument) as raised:
        checked_element_count(name, "FP32", (-1,), 48)
    assert len(str(raised.value)) < 400 and "(20000 characters)" in str(raised.value)
    with pytest.raises(InvalidArgument) as raised:
        checked_element_count("t", "X" * 20_000, (1,), 48)
    assert len(str(raised.value)) < 600
