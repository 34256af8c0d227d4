"""The precision of the fast path's Linear layers: a module swap at load, on modules the model owns.

``PRECISIONS`` maps a name to a function that turns one loaded ``nn.Linear`` (a ``FusedLinear`` included)
into the module that replaces it, or None to keep the layer as loaded. The engine calls ``apply_precision``
on each fast region's modules after fusing and before compiling, so compiled code and CUDA graphs see the
swapped modules. "fp16" is the checkpoint's weights in the engine's dtype: no swap.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

PRECISIONS: dict[str, Callable[[nn.Linear], nn.Module] | None] = {"fp16": None}


def apply_precision(root: nn.Module, precision: str) -> int:
    """Replace every ``nn.Linear`` under ``root`` as ``precision`` says; returns how many were swapped."""
    swap = PRECISIONS[precision]
    if swap is None:
        return 0
    targets = [(name, module) for name, module in root.named_modules() if isinstance(module, nn.Linear)]
    for name, linear in targets:
        owner_path, _, leaf = name.rpartition(".")
        setattr(root.get_submodule(owner_path) if owner_path else root, leaf, swap(linear))
    return len(targets)
