"""ShadowLauncher: the caller never waits on or sees a shadow, and close() cleans up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from switchyard.router.shadow_gate import Admission, ShadowGate
from switchyard.router.shadow_launcher import ShadowLauncher, ShadowOutcome


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


def test_every_admitted_shadow_tells_how_it_ended() -> None:
    async def scenario() -> None:
        launcher = ShadowLauncher(timeout_s=0.05)
        gate = ShadowGate(8)
        outcomes: dict[str, ShadowOutcome] = {}

        def record(name: str) -> Callable[[ShadowOutcome], None]:
            return lambda outcome: outcomes.__setitem__(name, outcome)

        async def answers() -> None:
            return None

        for name, work in (
            ("ok", answers()),
            ("error", failing()),
            ("hung", asyncio.Event().wait()),
        ):
            launcher.launch(work, gate, name=name, on_outcome=record(name))
        await launcher.wait_idle()
        assert outcomes == {
            "ok": ShadowOutcome.OK,
            "error": ShadowOutcome.ERROR,
            "hung": ShadowOutcome.TIMED_OUT,
        }
        assert launcher.timed_out_total == 1 and gate.in_flight == 0

        # A callback that fails is logged; the launcher's bookkeeping goes on.
        def broken(outcome: ShadowOutcome) -> None:
            raise RuntimeError(f"metrics broke on {outcome}")

        launcher.launch(answers(), gate, on_outcome=broken)
        await launcher.wait_idle()
        assert launcher.completed_total == 2 and gate.in_flight == 0
        # Cancelled by close: told too.
        launcher.launch(asyncio.Event().wait(), gate, on_outcome=record("closed"))
        await asyncio.sleep(0)
        await launcher.close()
        assert outcomes["closed"] is ShadowOutcome.CANCELLED

    asyncio.run(asyncio.wait_for(scenario(), timeout=5.0))
