"""How many torch threads a run gets by default: the cores that are idle when it starts.

With torch's default (every core), a run that shares the CPU with one other busy process slows down many times over,
not twice: each of the many small parallel regions of a step waits at its barrier for the thread that shares a core
with the other process and is descheduled for whole time slices. A thread count no larger than the idle cores avoids
that; ``OMP_NUM_THREADS`` (which torchrun sets to 1 per replica) and ``train.threads=N`` still set it by hand (the
experiments use 1, two jobs at a time).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def _cpu_times() -> list[tuple[int, int]]:
    """(idle, total) jiffies of every CPU since boot, from /proc/stat."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            values = [int(v) for v in line.split()[1:]]
            out.append((values[3] + values[4], sum(values[:8])))  # idle + iowait; user .. steal
    return out


def idle_cores(window: float = 0.25) -> float | None:
    """How many cores were idle over ``window`` seconds (e.g. 1.0 of 2 when one is busy); None off Linux."""
    try:
        before = _cpu_times()
        time.sleep(window)
        after = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    return sum((ai - bi) / max(1, at - bt) for (bi, bt), (ai, at) in zip(before, after))


def auto_threads() -> tuple[int, str]:
    """(thread count, why): ``OMP_NUM_THREADS`` when it is set (the user's count, or torchrun's 1 per replica);
    otherwise the idle cores at start, rounded, at least 1; every core where that cannot be read."""
    requested = os.environ.get("OMP_NUM_THREADS", "")
    if requested.isdigit() and int(requested) > 0:
        return int(requested), f"OMP_NUM_THREADS={requested}"
    cores = os.cpu_count() or 1
    idle = idle_cores()
    if idle is None:
        return cores, f"all {cores} cores (idle cores unknown here)"
    threads = max(1, min(cores, round(idle)))
    return threads, f"{idle:.1f} of {cores} cores idle at the start"
