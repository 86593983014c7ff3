"""Waiting for an asyncio.Event with a time limit, without losing a cancellation.

Python 3.11's asyncio.wait_for can swallow a cancellation that arrives as the event is set
or its timeout fires: a background loop written with it may then never stop, and its
owner's shutdown hangs. asyncio.timeout does not have that race.
"""

from __future__ import annotations

import asyncio


async def wait_for_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Whether `event` was set within `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
