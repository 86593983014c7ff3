"""Tensor payloads to numpy and back, with the size and shape checks every ingress needs.

Three encodings reach the data plane: raw little-endian bytes (gRPC raw_input_contents and
REST's binary extension), typed lists (gRPC `contents`) and JSON lists. Each is checked
against the declared shape before it is trusted, and a declared shape is checked against
the maximum request size before anything is allocated for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.datatypes import element_size_bytes, numpy_dtype
from switchyard.runtimes.errors import InvalidArgument
from switchyard.runtimes.tensor_codec import BYTES_LENGTH_PREFIX

# Far above any model's rank, and under numpy's own limit (32 before numpy 2, 64 since).
MAX_TENSOR_DIMS = 32
# Values converted per numpy call: each call holds the GIL, so a large tensor decoded in a
# worker thread leaves the event loop a turn every few milliseconds.
CONVERT_CHUNK_VALUES = 64 * 1024

# The JSON value types each datatype takes; everything else (null, true for a number, a
# string for a number, a number for BYTES) is refused, as Triton does.
_NUMBERS = frozenset({int, float})
JSON_VALUE_TYPES: dict[str, frozenset[type]] = {
    "BOOL": frozenset({bool}),
    **dict.fromkeys(
        ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"),
        frozenset({int}),
    ),
    **dict.fromkeys(("FP16", "FP32", "FP64"), _NUMBERS),
    "BYTES": frozenset({str}),
}
_JSON_TYPE_NAMES = {
    type(None): "null",
    bool: "true/false",
    int: "integer",
    float: "number",
    str: "string",
    dict: "object",
}


def checked_element_count(
    name: str, datatype: str, shape: Sequence[int], max_size_bytes: int
) -> int:
    """Elements declared by `shape`; refuses negative dims, too many dims, and sizes over
    the maximum (with a zero dim, the size the other dims declare)."""
    numpy_dtype(datatype, name)  # an unknown datatype is refused before anything else
    tensor = f"tensor '{client_text(name)}'"
    if len(shape) > MAX_TENSOR_DIMS:
        raise InvalidArgument(
            f"{tensor}: shape has {len(shape)} dimensions; at most {MAX_TENSOR_DIMS} are served"
        )
    if any(dim < 0 for dim in shape):
        raise InvalidArgument(f"{tensor}: shape {list(shape)} has a negative dimension")
    # A BYTES element takes at least its 4-byte length prefix on the wire.
    element_bytes = element_size_bytes(datatype) or BYTES_LENGTH_PREFIX.size
    count = math.prod(shape)  # Python ints: no overflow however large the dims
    size_bytes = count * element_bytes
    if size_bytes > max_size_bytes:
        raise InvalidArgument(
            f"{tensor}: shape {list(shape)} declares {count} elements ({size_bytes} "
            f"bytes), over the maximum request size of {max_size_bytes} bytes"
        )
    # A zero dim makes the count 0 however large the others are; those others still reach
    # numpy and the runtimes, whose sizes are 64-bit. They are held to the same bound.
    others = math.prod(dim for dim in shape if dim != 0)
    if count == 0 and others * element_bytes > max_size_bytes:
        raise InvalidArgument(
            f"{tensor}: shape {list(shape)} has no elements, but its other dimensions "
            f"declare {others} ({others * element_bytes} bytes), over the maximum request "
            f"size of {max_size_bytes} bytes"
        )
    return count


def decode_json_values(
    name: str, datatype: str, shape: Sequence[int], values: list[object]
) -> np.ndarray:
    """An array from a JSON `data` list (flat, or nested in row-major order), each value
    checked to be of a JSON type the datatype takes."""
    numpy_dtype(datatype, name)  # an unknown datatype is refused by name
    allowed = JSON_VALUE_TYPES[datatype]
    found = _leaf_types(name, values, len(shape))
    wrong = found - allowed
    if wrong:
        sent = ", ".join(sorted(_JSON_TYPE_NAMES.get(kind, kind.__name__) for kind in wrong))
        expected = " or ".join(sorted(_JSON_TYPE_NAMES[kind] for kind in allowed))
        raise InvalidArgument(
            f"tensor '{client_text(name)}': {datatype} data must be JSON {expected} values; "
            f"got {sent}"
        )
    return decode_values(name, datatype, shape, values)


def _leaf_types(name: str, values: list[object], depth_left: int) -> set[type]:
    """The types of the non-list values, at most `depth_left` lists deep."""
    found: set[type] = set()
    for start in range(0, len(values), CONVERT_CHUNK_VALUES):  # bounded calls, as below
        found |= set(map(type, values[start : start + CONVERT_CHUNK_VALUES]))
    if list in found:
        if depth_left <= 1:
            raise InvalidArgument(
                f"tensor '{client_text(name)}': data is nested deeper than its shape"
            )
        found.discard(list)
        for value in values:
            if type(value) is list:
                found |= _leaf_types(name, value, depth_left - 1)
    return found


def decode_values(
    name: str, datatype: str, shape: Sequence[int], values: Sequence[object]
) -> np.ndarray:
    """An array from typed values (gRPC contents; JSON values already checked), flat or
    nested in row-major order."""
    dtype = numpy_dtype(datatype, name)
    tensor = f"tensor '{client_text(name)}'"
    count = math.prod(shape)
    if not _nested(values) and len(values) != count:  # refused before converting any
        raise InvalidArgument(
            f"{tensor}: {len(values)} values, but shape {list(shape)} needs {count}"
        )
    try:
        if datatype == "BYTES":
            flat = values if not _nested(values) else np.asarray(values, dtype=object).ravel()
            array = np.empty(len(flat), dtype=object)
            array[:] = [_element_bytes(value) for value in flat]
        elif not _nested(values):
            array = _flat_array(values, dtype)
        else:
            array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgument(
            f"{tensor}: data is not a list of {datatype} values ({client_text(exc)})"
        ) from None
    if array.size != count:
        raise InvalidArgument(
            f"{tensor}: {array.size} values, but shape {list(shape)} needs {count}"
        )
    return array.reshape(shape)


def _nested(values: Sequence[object]) -> bool:
    return len(values) > 0 and isinstance(values[0], list)


def _flat_array(values: Sequence[object], dtype: np.dtype) -> np.ndarray:
    """np.asarray of a flat list, one bounded slice per call."""
    if len(values) <= CONVERT_CHUNK_VALUES:
        return np.asarray(values, dtype=dtype)
    array = np.empty(len(values), dtype=dtype)
    for start in range(0, len(values), CONVERT_CHUNK_VALUES):
        part = np.asarray(values[start : start + CONVERT_CHUNK_VALUES], dtype=dtype)
        if part.ndim != 1:
            raise ValueError("the data mixes lists and values")
        array[start : start + part.size] = part
    return array


def _element_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"a BYTES element must be a string, got {type(value).__name__}")


def json_values(array: np.ndarray) -> list[object]:
    """Flat row-major values for a JSON response (BYTES as UTF-8 text)."""
    if array.dtype.kind in "OSU":
        return [
            e.decode("utf-8", errors="replace") if isinstance(e, bytes) else str(e)
            for e in array.ravel()
        ]
    values: list[object] = array.ravel().tolist()
    return values
