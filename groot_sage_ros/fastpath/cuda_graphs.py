"""``GraphCache``: replay a fixed-shape function as CUDA graphs, one graph per input shape.

At batch 1 the GPU finishes each of the backbone's ~1,000 kernels faster than Python can launch the next;
a CUDA graph launches them all at once. A graph replays on the buffers it was captured with, so each call
copies its inputs into static buffers, replays, and clones the output (the next replay overwrites it).

All graphs of one cache share one memory pool: calls never overlap and outputs are cloned out at once, so
a pool the size of the largest graph's working memory serves them all. ``limit`` caps the graphs kept (the
training objective's lengths vary with the data): a signature beyond it runs ``fn`` as is.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

Outputs = torch.Tensor | tuple[torch.Tensor, ...]


class GraphCache:
    """``fn(*tensors) -> tensor`` (or a tuple of tensors) captured on first sight of each (shape, dtype)
    signature, then replayed."""

    def __init__(
        self, fn: Callable[..., Outputs], device: torch.device, warmup_calls: int = 2, limit: int | None = None
    ):
        self.fn, self.device, self.warmup_calls, self.limit = fn, device, warmup_calls, limit
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], Outputs]] = {}
        self._pool = None
        self.capture_seconds = 0.0  # warm-up and capture time of every graph so far

    def __len__(self) -> int:
        return len(self._graphs)

    def __bool__(self) -> bool:  # a cache that has captured nothing yet is still there: `cache or fallback` uses it
        return True

    def __call__(self, *inputs: torch.Tensor) -> Outputs:
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        if key not in self._graphs:
            if self.limit is not None and len(self._graphs) >= self.limit:
                return self.fn(*inputs)
            tick = time.perf_counter()
            self._graphs[key] = self._capture(inputs)
            self.capture_seconds += time.perf_counter() - tick
        graph, static_inputs, static_out = self._graphs[key]
        for static, value in zip(static_inputs, inputs):
            static.copy_(value)
        graph.replay()
        return tuple(t.clone() for t in static_out) if isinstance(static_out, tuple) else static_out.clone()

    def _capture(self, inputs: tuple[torch.Tensor, ...]):
        static_inputs = [t.clone() for t in inputs]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the capture (and any torch.compile), per PyTorch's notes
            for _ in range(self.warmup_calls):
                self.fn(*static_inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # torch.cuda.graph captures on a new stream of the current device: make that the model's device, which
        # for "cuda:1" (a second GPU, a torchrun rank) is not the process's default one. thread_local: the ROS
        # executor thread may touch CUDA while the worker thread captures.
        capture = torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local")
        with torch.cuda.device(self.device), capture:
            static_out = self.fn(*static_inputs)
        return graph, static_inputs, static_out
