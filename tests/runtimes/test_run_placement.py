"""Where runs go: the policy alone, on made-up timings and a fake clock."""

from __future__ import annotations

from switchyard.runtimes.run_placement import STALL_FACTOR, WINDOW_RUNS, RunPlacement

LIMIT_S = 0.001


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def placement(clock: Clock | None = None) -> RunPlacement:
    return RunPlacement(LIMIT_S, probe_interval_s=1.0, clock=clock or Clock())


def test_the_first_run_goes_to_a_thread_and_a_fast_one_brings_runs_onto_the_loop() -> None:
    runs = placement()
    assert not runs.next_inline()
    runs.observe(LIMIT_S / 4, ran_inline=False)
    assert runs.next_inline()


def test_a_run_over_half_the_limit_on_a_thread_and_on_the_loop_keeps_runs_on_threads() -> None:
    runs = placement()
    runs.observe(LIMIT_S * 0.6, ran_inline=False)
    assert runs.next_inline()  # a probe: a threaded timing can overstate
    runs.observe(LIMIT_S * 0.6, ran_inline=True)
    assert not runs.next_inline()
    runs.observe(LIMIT_S * 0.6, ran_inline=False)
    assert not runs.next_inline()  # the next probe waits for the interval


def test_one_preempted_run_on_the_loop_does_not_move_runs_off() -> None:
    runs = placement()
    runs.observe(LIMIT_S / 10, ran_inline=False)
    for _ in range(WINDOW_RUNS * 3):
        runs.observe(LIMIT_S / 10, ran_inline=True)
    runs.observe(LIMIT_S * 10, ran_inline=True)  # 10x the limit, under the stall factor
    assert runs.next_inline()
    for _ in range(WINDOW_RUNS):
        runs.observe(LIMIT_S / 10, ran_inline=True)
    assert runs.next_inline()


def test_runs_that_stay_slow_on_the_loop_move_off_once_they_are_the_median() -> None:
    runs = placement()
    runs.observe(LIMIT_S / 10, ran_inline=False)
    slow_needed = WINDOW_RUNS // 2  # the median of WINDOW_RUNS takes the upper middle two
    for index in range(WINDOW_RUNS):
        runs.observe(LIMIT_S * 2 if index >= slow_needed - 1 else LIMIT_S / 10, ran_inline=True)
    assert not runs.next_inline()


def test_one_run_past_the_stall_factor_moves_runs_off_at_once() -> None:
    runs = placement()
    runs.observe(LIMIT_S / 10, ran_inline=False)
    runs.observe(LIMIT_S * STALL_FACTOR, ran_inline=True)
    assert not runs.next_inline()


def test_slow_looking_threaded_runs_are_probed_on_the_loop_once_a_second() -> None:
    clock = Clock()
    runs = placement(clock)
    runs.observe(LIMIT_S / 10, ran_inline=False)
    runs.observe(LIMIT_S * STALL_FACTOR, ran_inline=True)  # off the loop; the probe clock starts
    runs.observe(LIMIT_S * 3, ran_inline=False)  # inflated by the wait for the GIL
    assert not runs.next_inline()  # no probe within the interval
    clock.now_s += 1.0
    runs.observe(LIMIT_S * 3, ran_inline=False)
    assert runs.next_inline()  # the probe
    runs.observe(LIMIT_S * 0.8, ran_inline=True)  # the probe is not fast enough: stay off
    assert not runs.next_inline()
    runs.observe(LIMIT_S * 3, ran_inline=False)
    assert not runs.next_inline()  # the failed probe restarted the interval
    clock.now_s += 1.0
    runs.observe(LIMIT_S * 3, ran_inline=False)
    assert runs.next_inline()
    runs.observe(LIMIT_S / 10, ran_inline=True)  # a clean, fast probe: back on the loop
    assert runs.next_inline()
    for _ in range(WINDOW_RUNS):
        runs.observe(LIMIT_S / 10, ran_inline=True)
        assert runs.next_inline()


def test_no_probe_after_a_threaded_run_slow_enough_to_stall_the_loop() -> None:
    clock = Clock()
    runs = placement(clock)
    runs.observe(LIMIT_S * STALL_FACTOR, ran_inline=False)
    clock.now_s += 10.0
    runs.observe(LIMIT_S * STALL_FACTOR, ran_inline=False)
    assert not runs.next_inline()


def test_a_limit_of_zero_never_runs_inline() -> None:
    runs = RunPlacement(0.0)
    for _ in range(10):
        runs.observe(1e-6, ran_inline=False)
        assert not runs.next_inline()
