"""CPU time from /proc: of a process and everything it started, and of the whole machine.

On a 2-core machine the client and the server share the CPUs, so every run reports who used
how much: a server at 1.0 core with an idle machine is the server's limit, a machine at 2.0
cores says the client may be stealing from it.
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = (PROC / pid / "stat").read_text()
    except OSError:
        return None  # ended meanwhile
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return text.rsplit(")", 1)[1].split()


def tree_cpu_s(root_pid: int) -> float:
    """User + system CPU seconds of `root_pid` and its live descendants (Ray's workers,
    tritonserver's backend stubs); children that already exited are not counted."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is None:
            continue
        # After the comm: state(0) ppid(1) ... utime(11) stime(12).
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, stack, seen = 0, [root_pid], set()
    while stack:
        pid = stack.pop()
        if pid in seen or pid not in ticks:
            continue
        seen.add(pid)
        total += ticks[pid]
        stack.extend(children.get(pid, ()))
    return total / CLOCK_TICKS_PER_S


def machine_busy_cpu_s() -> float:
    """CPU seconds all cores spent not idle since boot (the first line of /proc/stat)."""
    values = [int(v) for v in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS_PER_S
