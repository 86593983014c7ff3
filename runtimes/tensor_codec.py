"""Raw tensor bytes (the OIP binary encoding) to numpy and back.

Fixed-size datatypes are little-endian, row-major; BYTES elements are each a uint32 length
followed by that many bytes. Used by the ingresses and by runtimes that talk OIP to a
remote server.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.datatypes import numpy_dtype
from switchyard.runtimes.errors import InvalidArgument

BYTES_LENGTH_PREFIX = struct.Struct("<I")  # each BYTES element: uint32 length, then its bytes


def decode_raw(
    name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview
) -> np.ndarray:
    """A read-only array over raw bytes (no copy for fixed-size datatypes)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _decode_bytes_elements(name, shape, count, raw)
    dtype = numpy_dtype(datatype, name).newbyteorder("<")
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"tensor '{client_text(name)}': {len(raw)} raw bytes, but shape {list(shape)} of "
            f"{datatype} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _decode_bytes_elements(
    name: str, shape: Sequence[int], count: int, raw: bytes | memoryview
) -> np.ndarray:
    view = memoryview(raw)
    elements: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + BYTES_LENGTH_PREFIX.size > len(view):
            raise InvalidArgument(
                f"tensor '{client_text(name)}': BYTES data ends inside a length prefix"
            )
        (length,) = BYTES_LENGTH_PREFIX.unpack_from(view, offset)
        offset += BYTES_LENGTH_PREFIX.size
        if offset + length > len(view):
            raise InvalidArgument(
                f"tensor '{client_text(name)}': BYTES element runs past the end of the data"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if len(elements) != count:
        raise InvalidArgument(
            f"tensor '{client_text(name)}': {len(elements)} BYTES elements, "
            f"but shape {list(shape)} needs {count}"
        )
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array.reshape(shape)


def encode_raw(array: np.ndarray) -> bytes:
    """Little-endian row-major bytes; BYTES tensors as length-prefixed elements."""
    if array.dtype.kind in "OSU":
        parts = []
        for element in array.ravel():
            data = element.encode() if isinstance(element, str) else bytes(element)
            parts += [BYTES_LENGTH_PREFIX.pack(len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
