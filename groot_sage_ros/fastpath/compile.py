"""The fast path of a family's model: fused modules, precision, compiled regions, the kernel cache.

Only the repeated layers are compiled (PyTorch's "regional compilation"): each region's function (a
family's ``FastRegion.forward``) is ``torch.compile``d once and serves every layer of the region, which
passes its own fast module as an argument (one program for all 27 SigLIP layers, one for the Qwen3 layers,
a few for the action head). Tracing a few small functions instead of the whole model keeps a cold start
short and a warm start (kernels from the cache) a few seconds; the CUDA graph around the whole call
(``cuda_graphs.py``) removes the Python between the regions.

The fast modules belong to the model (``model.fast``), so they move and are freed with it; the model's
own modules are not touched, and the reference path (no callables) runs them as built, even at the same
time as the fast path. A precision other than fp16 was swapped in before (``precision.quantize_layers``):
both paths compute with the swapped modules, the fast one with their fused ``concatenate``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

DEFAULT_CACHE_DIR = "~/.cache/groot_sage_ros/torchinductor"


def use_compile_cache(path: str = "") -> Path:
    """Point inductor's kernel caches at ``path``, else ``$TORCHINDUCTOR_CACHE_DIR``, else our default.

    PyTorch's own default lives under /tmp, which a robot's reboot empties; ours survives it.
    """
    folder = path or os.environ.get("TORCHINDUCTOR_CACHE_DIR") or DEFAULT_CACHE_DIR
    resolved = Path(folder).expanduser().resolve()
    resolved.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(resolved)
    return resolved


def compile_arguments(mode: str) -> dict:
    """``torch.compile`` keyword arguments for a region: ``mode``'s inductor options, plus one-pass
    reductions for rows up to 2,048 wide (``reductions.py``) where this PyTorch lets us choose them."""
    import torch._inductor
    from torch._inductor import config as inductor_config

    if not hasattr(inductor_config, "inductor_choices_class"):  # older PyTorch: its own heuristics
        return {"mode": mode}
    from .reductions import WidePersistentReductions

    options = torch._inductor.list_mode_options(mode)
    return {"options": {**options, "inductor_choices_class": WidePersistentReductions}}


def start_kind(compiled: bool, cache_counts: dict[str, int]) -> str:
    """How an engine started: "eager" (nothing compiled), "cold" (kernels compiled afresh) or "warm" (all from
    the on-disk cache), from ``compile_cache_counts`` after its warm-up."""
    return "eager" if not compiled else "cold" if cache_counts.get("misses") else "warm"


def compile_cache_counts() -> dict[str, int]:
    """Compiled graphs served from the on-disk cache (hits) and compiled afresh (misses), this process."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return {"hits": int(inductor["fxgraph_cache_hit"]), "misses": int(inductor["fxgraph_cache_miss"])}


@dataclass(frozen=True)
class MarkVaryingDims:
    """A compiled function (a region's; the student's whole call), called after marking the dims of its
    inputs that vary between calls (``FastRegion.varying_dims``) as dynamic: dynamo traces one program for
    every batch and length, in which the other dims (widths, heads) are constants. ``dynamic=True`` would make
    every dim a symbol and take about twice as long to trace at each start (measured on the CPU;
    docs/speed.md). The marks cost a few microseconds a call, and nothing under a CUDA graph."""

    compiled: Callable
    varying_dims: tuple[tuple[int, ...], ...]

    def __call__(self, module: nn.Module, *inputs):
        for value, dims in zip(inputs, self.varying_dims):
            for tensor in value if isinstance(value, tuple) else (value,):
                if isinstance(tensor, torch.Tensor):
                    for dim in dims:
                        torch._dynamo.maybe_mark_dynamic(tensor, dim)  # a size-1 dim is still specialised
        return self.compiled(module, *inputs)


def install_fast_path(
    model: nn.Module, regions: Sequence, compile: bool, mode: str = "default", dynamic_lengths: bool = True
) -> dict[str, list[Callable]]:
    """Build every region's fast modules onto ``model.fast`` (from the layers as loaded, at their precision),
    compile each region's function (with ``compile``) and return the per-layer callables the model takes."""
    if compile:  # one program per shape (without dynamic lengths) and per grad mode (RTC's guided mode)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    compile_kwargs = compile_arguments(mode) if compile else {}
    model.fast = nn.ModuleDict()
    calls = {}
    for region in regions:
        modules = nn.ModuleList()
        for layer in region.layers:
            modules.append(region.build(layer))
            # The separate weights' blocks go back to the driver layer by layer, so fusing raises the peak
            # memory by one layer's weights at most (a no-op without CUDA).
            torch.cuda.empty_cache()
        forward = region.forward
        if compile:
            # None: PyTorch's default (dynamic once a shape changes) and our marks; False: one program per shape
            forward = torch.compile(forward, dynamic=None if dynamic_lengths else False, **compile_kwargs)
            forward = MarkVaryingDims(forward, region.varying_dims if dynamic_lengths else ())
        model.fast[region.name] = modules
        calls[region.name] = [functools.partial(forward, module) for module in modules]
    return calls
