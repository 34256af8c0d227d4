"""What is compiled (the repeated layers), and the on-disk cache that makes restarts quick.

Only the repeated layers are compiled (PyTorch's "regional compilation"): every SigLIP layer shares one
compiled program, every Qwen3 layer another, the action head's blocks a few more. Tracing a few small
regions instead of the whole model keeps a cold start short and a warm start (kernels from the cache) a
few seconds; the CUDA graph around the whole call (``cuda_graphs.py``) removes the Python between the
regions. ``fast_layers.FastLayers`` installs the compiled call paths.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def compiled_regions(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """(layer, lengths vary) for every repeated layer of a ``GrootN15``.

    SigLIP layers always see 256 tokens per image; the LLM's and the action head's inputs are as long as
    the prompt, so those are compiled with dynamic shapes (one program for every length, no recompiles).
    """
    eagle = model.backbone.eagle_model
    regions = [(layer, False) for layer in eagle.vision_model.vision_model.encoder.layers]
    regions += [(layer, True) for layer in eagle.language_model.model.layers]
    head = getattr(model, "action_head", None)
    if head is not None:
        regions += [(block, True) for block in head.vl_self_attention.transformer_blocks]
        regions += [(block, True) for block in head.model.transformer_blocks]
    return regions


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


def compile_cache_counts() -> dict[str, int]:
    """Compiled graphs served from the on-disk cache (hits) and compiled afresh (misses), this process."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return {"hits": int(inductor["fxgraph_cache_hit"]), "misses": int(inductor["fxgraph_cache_miss"])}
