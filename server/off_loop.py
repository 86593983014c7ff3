"""Decoding large requests off the event loop, one at a time.

Inflating a compressed body, parsing a large JSON body and converting large typed gRPC
contents each take milliseconds to seconds of CPU. Done on the event loop they stall every
other request on every port; done here they stall none: zlib inflates without holding the
interpreter's lock, and the value conversions hand it back between bounded slices
(server/tensors.py). One thread for the whole process, so a burst of large requests takes
turns instead of taking the lock from the loop many at a time.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

DECODE_THREADS = 1

Params = ParamSpec("Params")
Result = TypeVar("Result")


@functools.cache
def _decoder() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="switchyard-decode")


async def decode_off_loop(
    decode: Callable[Params, Result], *args: Params.args, **kwargs: Params.kwargs
) -> Result:
    """decode(*args, **kwargs) in the decoding thread; its exceptions are raised here."""
    call = functools.partial(decode, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_decoder(), call)
