from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from switchyard.runtimes.datatypes import OIP_TO_NUMPY, oip_datatype
from switchyard.runtimes.errors import InvalidArgument
from switchyard.runtimes.tensor_codec import decode_raw, encode_raw
from switchyard.server.tensors import checked_element_count, decode_values

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
