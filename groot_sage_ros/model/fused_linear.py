"""One GEMM for several Linear layers that read the same input (q/k/v, gate/up), without a second copy."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def concatenate_linears(linears: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One (sum of outputs, in) weight and bias for Linear layers that share their input.

    Each layer's weight and bias become views of the concatenation, so the weights are stored once and
    the separate layers still compute what they did (the plain path), from the same memory.
    """
    weight = torch.cat([linear.weight for linear in linears])  # (sum out, in)
    bias = torch.cat([linear.bias for linear in linears]) if linears[0].bias is not None else None
    start = 0
    for linear in linears:
        rows = slice(start, start + linear.out_features)
        linear.weight = nn.Parameter(weight[rows], requires_grad=False)
        if bias is not None:
            linear.bias = nn.Parameter(bias[rows], requires_grad=False)
        start += linear.out_features
    return weight, bias


def register_fused(module: nn.Module, name: str, linears: list[nn.Linear]) -> None:
    """``concatenate_linears`` as non-persistent buffers ``{name}_weight`` and ``{name}_bias`` (None without
    biases) on ``module``: kept out of the state dict, moved with the module."""
    weight, bias = concatenate_linears(linears)
    module.register_buffer(f"{name}_weight", weight, persistent=False)
    module.register_buffer(f"{name}_bias", bias, persistent=False)
