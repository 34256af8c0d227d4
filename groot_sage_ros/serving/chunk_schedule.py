"""When a node computes action chunks and how it stamps them: the execution schedule (ROS-free).

A chunk computed from the camera frame stamped ``s`` has its step k due at ``s + (k + 1) p`` (p: the
control period). It reaches the controller one inference delay after ``s``, so its first ``delay`` steps
are already past: the robot executes them from the previous chunk (they are *committed*). The schedule:

- ``delay`` (steps): ``ceil(p95 of the measured camera-stamp-to-publish latency / p)`` over the last
  ``window`` chunks, or a fixed value;
- a new chunk is due once the previous one has run ``execution_horizon - delay`` steps (0: every frame set);
- the new chunk continues the previous one (``prefix``: real-time chunking in the head, ``families/
  common/flow.py``): the previous chunk's actions from the new chunk's step 0 on, its first ``delay`` steps
  frozen;
- the published trajectory starts at step ``delay``: ``header.stamp`` is the time that step is due, and
  point j is due ``j p`` after it, so a controller that splices trajectories by time takes over exactly
  where the committed steps end.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from ..api import ChunkPrefix


@dataclass
class PlannedChunk:
    normalised: np.ndarray  # (H, A) the head's output
    actions: dict[str, np.ndarray]  # key -> (H', width) robot units, the embodiment's horizon
    delay: int  # steps committed to the previous chunk: publish from this step on
    prefix: ChunkPrefix | None  # what it continued (RTC)

    @property
    def frozen_kept(self) -> bool:
        """ "prefix" mode's promise: the committed steps equal the previous chunk's, exactly."""
        if self.prefix is None or self.prefix.mode != "prefix":
            return True
        frozen = self.prefix.frozen
        return bool(np.array_equal(self.normalised[:frozen], self.prefix.actions[:frozen].numpy()))


@dataclass
class PublishedChunk:
    due_ns: int  # when step 0 is due (camera stamp + one period)
    normalised: np.ndarray  # (H, A) the head's output, in its normalised space
    positions: np.ndarray  # (H', J) robot units, the embodiment's horizon
    state: dict[str, np.ndarray]  # the robot-unit state it was computed from (relative actions' reference)


class ChunkSchedule:
    def __init__(
        self, rate_hz: float, execution_horizon: int, fixed_delay: int = -1, window: int = 50, guided_steps: int = 1
    ):
        self.period_ns = int(round(1e9 / rate_hz))
        self.execution_horizon, self.fixed_delay = execution_horizon, fixed_delay
        self.guided_steps = guided_steps  # "guided": the first denoising steps through the Jacobian (-1: all)
        self.latencies_ms: deque[float] = deque(maxlen=window)
        self.last: PublishedChunk | None = None

    def record_latency(self, stamp_ns: int, published_ns: int) -> None:
        self.latencies_ms.append((published_ns - stamp_ns) / 1e6)

    def latency_p95_ms(self) -> float | None:
        return float(np.percentile(list(self.latencies_ms), 95)) if self.latencies_ms else None

    def delay_steps(self, horizon: int) -> int:
        """The steps a new chunk is late by: the fixed value, or from the measured latency (0 before any)."""
        if self.fixed_delay >= 0:
            return min(self.fixed_delay, horizon - 1)
        p95 = self.latency_p95_ms()
        if p95 is None:
            return 0
        return min(max(0, math.ceil(round(p95 * 1e6 / self.period_ns, 6))), horizon - 1)

    def elapsed_steps(self, stamp_ns: int) -> int:
        """Steps of the previous chunk due before a chunk from the frame stamped ``stamp_ns`` starts."""
        return int(round((stamp_ns + self.period_ns - self.last.due_ns) / self.period_ns))

    def is_due(self, stamp_ns: int, delay: int) -> bool:
        """Whether a frame set stamped ``stamp_ns`` gets a chunk: none yet, every frame set
        (``execution_horizon`` 0), or once the previous chunk has run ``execution_horizon - delay`` steps."""
        if self.last is None or self.execution_horizon <= 0:
            return True
        return self.elapsed_steps(stamp_ns) >= max(1, self.execution_horizon - delay)

    def continuation(self, stamp_ns: int, horizon: int) -> tuple[np.ndarray, int] | None:
        """The previous chunk from the new chunk's step 0 on: (actions (horizon, A) normalised, the steps it
        still covers), or None when it is over or there is none."""
        if self.last is None:
            return None
        elapsed = self.elapsed_steps(stamp_ns)
        covered = min(len(self.last.positions), self.last.normalised.shape[0]) - elapsed
        if elapsed < 0 or covered <= 0:
            return None
        actions = np.zeros((horizon, self.last.normalised.shape[1]), dtype=self.last.normalised.dtype)
        actions[:covered] = self.last.normalised[elapsed : elapsed + covered]
        return actions, covered

    def boundary_jump(self, stamp_ns: int, delay: int, positions: np.ndarray) -> float | None:
        """The largest change of any joint's command where the controller switches: the new chunk's first
        published step against the previous chunk's step due at the same time (robot units); None where the
        previous chunk does not reach that far."""
        if self.last is None:
            return None
        switch = self.elapsed_steps(stamp_ns) + delay  # the previous chunk's step due with the new one's ``delay``
        if not 0 <= switch < len(self.last.positions) or delay >= len(positions):
            return None
        return float(np.abs(positions[delay] - self.last.positions[switch]).max())

    def first_due_ns(self, stamp_ns: int, delay: int) -> int:
        """``header.stamp`` of a chunk published from step ``delay``: when that step is due."""
        return stamp_ns + (delay + 1) * self.period_ns

    def plan(self, policy, result, state: dict[str, np.ndarray], stamp_ns: int, seed, rtc: str) -> PlannedChunk | None:
        """The next chunk for a frame set stamped ``stamp_ns`` (None when none is due): ``policy`` (an
        ``api.ActionPolicy``) on ``result``'s features and the robot-unit ``state``, continuing the last chunk
        when ``rtc`` is "prefix" or "guided" (moved to this state for relative actions)."""
        horizon = policy.engine.action_horizon
        delay = self.delay_steps(horizon)
        if not self.is_due(stamp_ns, delay):
            return None
        prefix = None
        found = self.continuation(stamp_ns, horizon) if rtc != "off" else None
        if found is not None:
            actions, covered = found
            if policy.normalizer.relative:  # the same motion, relative to the state this chunk starts from
                actions = policy.normalizer.rebase(actions, self.last.state, state).astype(np.float32)
            prefix = ChunkPrefix(
                torch.from_numpy(actions), min(delay, covered), covered, rtc, guided_steps=self.guided_steps
            )
        normalised = policy.normalised_chunk(result, state, seed, prefix=prefix).numpy()  # (H, A)
        return PlannedChunk(normalised, policy.normalizer.split_actions(normalised, state), delay, prefix)

    def commit(self, stamp_ns: int, planned: PlannedChunk, positions: np.ndarray, state, published_ns: int) -> None:
        """Record a published chunk: what the next one continues, and its latency for the delay."""
        self.record_latency(stamp_ns, published_ns)
        self.last = PublishedChunk(stamp_ns + self.period_ns, planned.normalised, positions, state)
