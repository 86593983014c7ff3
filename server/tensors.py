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

from switchyard.runtimes.datatypes import element_size_bytes, numpy_dtype
from switchyard.runtimes.errors import InvalidArgument
from switchyard.runtimes.tensor_codec import BYTES_LENGTH_PREFIX


def checked_element_count(
    name: str, datatype: str, shape: Sequence[int], max_size_bytes: int
) -> int:
    """Elements declared by `shape`; refuses negative dims and sizes over the maximum."""
    numpy_dtype(datatype, name)  # an unknown datatype is refused before anything else
    if any(dim < 0 for dim in shape):
        raise InvalidArgument(f"tensor '{name}': shape {list(shape)} has a negative dimension")
    count = math.prod(shape)  # Python ints: no overflow however large the dims
    # A BYTES element takes at least its 4-byte length prefix on the wire.
    size_bytes = count * (element_size_bytes(datatype) or BYTES_LENGTH_PREFIX.size)
    if size_bytes > max_size_bytes:
        raise InvalidArgument(
            f"tensor '{name}': shape {list(shape)} declares {count} elements ({size_bytes} "
            f"bytes), over the maximum request size of {max_size_bytes} bytes"
        )
    return count


def decode_values(
    name: str, datatype: str, shape: Sequence[int], values: Sequence[object]
) -> np.ndarray:
    """An array from typed or JSON values (flat, or nested in row-major order)."""
    dtype = numpy_dtype(datatype, name)
    try:
        if datatype == "BYTES":
            nested = np.asarray(values, dtype=object).ravel()
            array = np.empty(nested.size, dtype=object)
            array[:] = [v.encode() if isinstance(v, str) else bytes(v) for v in nested]
        else:
            array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgument(
            f"tensor '{name}': data is not a list of {datatype} values ({exc})"
        ) from None
    count = math.prod(shape)
    if array.size != count:
        raise InvalidArgument(
            f"tensor '{name}': {array.size} values, but shape {list(shape)} needs {count}"
        )
    return array.reshape(shape)


def json_values(array: np.ndarray) -> list[object]:
    """Flat row-major values for a JSON response (BYTES as UTF-8 text)."""
    if array.dtype.kind in "OSU":
        return [
            e.decode("utf-8", errors="replace") if isinstance(e, bytes) else str(e)
            for e in array.ravel()
        ]
    values: list[object] = array.ravel().tolist()  # Python numbers
    return values
