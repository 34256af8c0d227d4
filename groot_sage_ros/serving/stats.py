"""Latency percentiles per stage, rates and counters for diagnostics (ROS-free, thread-safe)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque


class LatencyStats:
    """The last ``window`` latencies of each stage, in milliseconds."""

    def __init__(self, window: int = 200):
        self._samples: dict[str, deque[float]] = {}
        self._window = window
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._samples.setdefault(stage, deque(maxlen=self._window)).append(ms)

    def percentiles(self) -> dict[str, tuple[float, float]]:
        """stage -> (p50, p95)."""
        with self._lock:
            snapshot = {stage: sorted(values) for stage, values in self._samples.items() if values}
        return {stage: (pick(v, 0.50), pick(v, 0.95)) for stage, v in snapshot.items()}


def pick(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class RateMeter:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 5.0):
        self._times: deque[float] = deque()
        self._window_s = window_s
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._times.append(time.monotonic())

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._times and now - self._times[0] > self._window_s:
                self._times.popleft()
            if len(self._times) < 2:
                return 0.0
            span = max(now - self._times[0], 1e-9)
            return len(self._times) / span


class Counters:
    """Named monotonic counters (dropped and rejected frames by reason)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
