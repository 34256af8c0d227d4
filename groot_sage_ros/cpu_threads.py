"""How many threads PyTorch's intra-op pool gets on the CPU, so a command does not oversubscribe the machine.

PyTorch starts one OpenMP thread per core. When the cores are already busy, with another process or with
this command's own decode threads, those threads wait on each other at every parallel region. So the
default is the cores this process may use, less the cores other processes keep busy right now
(``/proc/stat`` over a quarter of a second; the load average lags a minute behind) and less the command's
own busy threads, and at least 1. ``--threads N`` on ``extract``, ``distill`` and ``evaluate`` overrides it.
"""

from __future__ import annotations

import os
import sys
import time


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_cores(window_s: float = 0.25) -> float:
    """Cores busy with other work, measured from ``/proc/stat`` over ``window_s`` (call it while this
    process is idle); the 1-minute load average where there is no ``/proc/stat``."""

    def ticks() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    try:
        total0, idle0 = ticks()
        time.sleep(window_s)
        total1, idle1 = ticks()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    busy_share = 1.0 - (idle1 - idle0) / max(total1 - total0, 1)
    return busy_share * (os.cpu_count() or 1)


def intra_op_threads(requested: int = 0, busy_threads: int = 0, processes: int = 1) -> int:
    """``requested`` if given, else the idle cores less ``busy_threads``, shared by ``processes`` (torchrun
    ranks on one machine), in 1..cores."""
    if requested > 0:
        return requested
    cores = available_cores()
    return max(1, min(cores, int(cores - busy_cores() + 0.5) - busy_threads) // processes)


def set_cpu_threads(command: str, requested: int = 0, busy_threads: int = 0, processes: int = 1) -> int:
    """Set PyTorch's intra-op threads for a CPU run and say so on stderr; returns the number."""
    import torch

    threads = intra_op_threads(requested, busy_threads, processes)
    torch.set_num_threads(threads)
    how = (
        "--threads"
        if requested
        else f"{available_cores()} cores" + (f", {busy_threads} decode threads" if busy_threads else "")
    )
    print(f"{command}: {threads} PyTorch thread(s) on the CPU ({how}; --threads N to choose)", file=sys.stderr)
    return threads
