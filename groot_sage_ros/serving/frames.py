"""Frame sets from several cameras: approximate-time sync by header stamp, and a freshest-wins mailbox.

ROS-free so the node and the offline engine pair frames the same way.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass
class Frame:
    camera: int  # index into the camera list
    stamp_ns: int  # header stamp
    payload: Any  # the undecoded message
    received_ns: int = 0  # monotonic arrival time, for latency


@dataclass
class FrameSet:
    frames: list[Frame]  # one per camera, camera order

    @property
    def newest(self) -> Frame:
        return max(self.frames, key=lambda f: f.stamp_ns)

    @property
    def stamp_ns(self) -> int:
        return self.newest.stamp_ns


class FrameSetSync:
    """Pairs one frame per camera whose stamps lie within ``slop_ns`` of the newest frame's.

    Each camera keeps its last ``queue_size`` frames. A new frame is tried as the pivot of a set: every
    other camera contributes its frame closest in stamp. Frames at or before a completed set's stamps
    are discarded; frames that leave a queue without joining a set are counted in ``unmatched``.
    """

    def __init__(self, num_cameras: int, slop_ns: int, queue_size: int = 8):
        if num_cameras < 1:
            raise ValueError("at least one camera topic is needed")
        self.num_cameras = num_cameras
        self.slop_ns = slop_ns
        self.queues: list[deque[Frame]] = [deque() for _ in range(num_cameras)]
        self.queue_size = queue_size
        self.unmatched = 0

    def add(self, frame: Frame) -> FrameSet | None:
        queue = self.queues[frame.camera]
        queue.append(frame)
        if len(queue) > self.queue_size:
            queue.popleft()
            self.unmatched += 1
        chosen = [frame]
        for camera in range(self.num_cameras):
            if camera == frame.camera:
                continue
            candidates = self.queues[camera]
            if not candidates:
                return None
            best = min(candidates, key=lambda f: abs(f.stamp_ns - frame.stamp_ns))
            if abs(best.stamp_ns - frame.stamp_ns) > self.slop_ns:
                return None
            chosen.append(best)
        for picked in chosen:
            camera_queue = self.queues[picked.camera]
            while camera_queue and camera_queue[0].stamp_ns <= picked.stamp_ns:
                if camera_queue.popleft() is not picked:
                    self.unmatched += 1
        return FrameSet(sorted(chosen, key=lambda f: f.camera))


class LatestSlot:
    """A one-item mailbox between the executor and the inference worker: the freshest item wins."""

    def __init__(self) -> None:
        self._item: Any = None
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store ``item``; True if it replaced one the worker had not taken (a dropped frame set)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float) -> Any:
        """The pending item, waiting up to ``timeout`` s; None on timeout or after ``close``."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()
