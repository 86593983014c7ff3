"""ShadowLauncher: the caller never waits on or sees a shadow, and close() cleans up."""

from __future__ import annotations

import asyncio

from switchyard.router.shadow_gate import Admission, ShadowGate
from switchyard.router.shadow_launcher import ShadowLauncher


async def failing() -> None:
    raise RuntimeError("shadow model exploded")


def test_failing_and_slow_shadows_never_reach_the_caller() -> None:
    async def scenario() -> None:
        launcher = ShadowLauncher()
        gate = ShadowGate(4)
        never = asyncio.Event()

        async def caller() -> str:
            launcher.launch(failing(), gate, name="failing")
            launcher.launch(never.wait(), gate, name="slow")
            return "primary answer"

        # Bounded: the caller returns without waiting for either shadow.
        assert await asyncio.wait_for(caller(), timeout=1.0) == "primary answer"
        await asyncio.sleep(0)  # let the failing shadow run and fail
        await asyncio.sleep(0)
        assert launcher.failed_total == 1
        assert launcher.in_flight == 1 and gate.in_flight == 1
        await launcher.close()
        assert launcher.in_flight == 0 and gate.in_flight == 0
        assert launcher.cancelled_total == 1
        # Closed: new shadows are dropped unstarted, with the reason.
        assert launcher.launch(never.wait(), gate) is Admission.CLOSED
        assert launcher.dropped_closed_total == 1

    asyncio.run(asyncio.wait_for(scenario(), timeout=5.0))


def test_over_the_cap_is_dropped_and_slots_are_released() -> None:
    async def scenario() -> None:
        launcher = ShadowLauncher()
        gate = ShadowGate(1)
        release = asyncio.Event()
        assert launcher.launch(release.wait(), gate) is Admission.ADMITTED
        assert launcher.launch(release.wait(), gate) is Admission.AT_CAPACITY
        assert gate.dropped_total == 1
        release.set()
        await launcher.wait_idle()
        assert launcher.completed_total == 1 and gate.in_flight == 0
        assert launcher.launch(failing(), gate).admitted
        await launcher.wait_idle()
        assert launcher.failed_total == 1 and gate.in_flight == 0
        await launcher.close()

    asyncio.run(asyncio.wait_for(scenario(), timeout=5.0))


def test_close_before_a_shadow_starts_still_releases_its_slot() -> None:
    async def scenario() -> None:
        launcher = ShadowLauncher()
        gate = ShadowGate(1)
        launcher.launch(failing(), gate)
        await launcher.close()  # cancelled before its first step
        assert gate.in_flight == 0 and launcher.cancelled_total == 1

    asyncio.run(asyncio.wait_for(scenario(), timeout=5.0))


def test_hung_shadow_is_timed_out() -> None:
    async def scenario() -> None:
        launcher = ShadowLauncher(timeout_s=0.01)
        gate = ShadowGate(1)
        launcher.launch(asyncio.Event().wait(), gate)
        await launcher.wait_idle()
        assert launcher.timed_out_total == 1 and gate.in_flight == 0

    asyncio.run(asyncio.wait_for(scenario(), timeout=5.0))
