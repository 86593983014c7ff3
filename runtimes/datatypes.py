"""Open Inference Protocol datatypes and their numpy equivalents."""

from __future__ import annotations

import numpy as np

from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument

# BYTES tensors are numpy object arrays of `bytes`; BF16 has no numpy dtype and is refused.
OIP_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

NUMPY_TO_OIP: dict[np.dtype, str] = {dtype: name for name, dtype in OIP_TO_NUMPY.items()}
# numpy unicode / bytes string arrays are BYTES tensors too.
NUMPY_KIND_BYTES = frozenset("OSU")


def numpy_dtype(datatype: str, tensor_name: str) -> np.dtype:
    """The numpy dtype for an OIP datatype, or InvalidArgument naming the tensor."""
    try:
        return OIP_TO_NUMPY[datatype]
    except KeyError:
        supported = ", ".join(OIP_TO_NUMPY)
        raise InvalidArgument(
            f"tensor '{client_text(tensor_name)}': unsupported datatype "
            f"'{client_text(datatype)}' (supported: {supported})"
        ) from None


def oip_datatype(dtype: np.dtype) -> str:
    """The OIP datatype name of a numpy dtype."""
    if dtype.kind in NUMPY_KIND_BYTES:
        return "BYTES"
    try:
        return NUMPY_TO_OIP[dtype]
    except KeyError:
        raise InvalidArgument(
            f"numpy dtype {dtype} has no Open Inference Protocol datatype"
        ) from None


def element_size_bytes(datatype: str) -> int:
    """Bytes per element in the raw encoding; 0 for BYTES, whose elements vary in size."""
    return 0 if datatype == "BYTES" else OIP_TO_NUMPY[datatype].itemsize
