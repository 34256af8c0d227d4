"""``FusedLinear``: several Linear layers that read the same input (q/k/v, gate/up) as one GEMM.

At batch 1 these GEMMs are too small to fill a large GPU, so three launches cost about three times one.
A family's fast regions own one ``FusedLinear`` per group, filled from the checkpoint's separate weights
after loading. The separate layers keep views of the fused weight, so nothing is stored twice and the
reference path still reads the modules as built. It is an ``nn.Linear``, so a precision swap at load
(``precision.py``) reaches it like any other Linear; after a swap, ``fuse_linears`` joins the swapped
modules with their own ``concatenate``. A group of mixed precision (``precision_keep_fp16`` naming ``q_proj``
but not ``k_proj``) is not fused: ``SideBySideLinears`` runs its layers one GEMM each, at their own precision.
"""

from __future__ import annotations

import torch
from torch import nn


class SplitOutputs:
    """For a module that computes several layers' outputs side by side (``sizes`` wide each)."""

    sizes: list[int]

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The fused GEMM, cut back into the separate layers' outputs: (..., in) -> one (..., out_k) per layer."""
        return self(x).split(self.sizes, dim=-1)


def fuse_linears(linears: list[nn.Module]) -> nn.Module:
    """One module computing ``linears`` (same input): one GEMM for a ``FusedLinear`` of plain Linear layers or
    the ``concatenate`` of a precision's modules (all of one kind); one GEMM each for layers of mixed kinds."""
    kinds = {type(linear) for linear in linears}
    if len(kinds) != 1:
        return SideBySideLinears(linears)
    kind = kinds.pop()
    return FusedLinear(linears) if kind is nn.Linear else kind.concatenate(linears)


class FusedLinear(SplitOutputs, nn.Linear):
    """One (sum of outputs, in) weight for Linear layers that share their input; ``split`` cuts the output."""

    def __init__(self, linears: list[nn.Linear]):
        first = linears[0]
        sizes = [linear.out_features for linear in linears]
        super().__init__(first.in_features, sum(sizes), bias=first.bias is not None, device="meta")
        self.sizes = sizes
        with torch.no_grad():
            weight = torch.cat([linear.weight for linear in linears])  # (sum out, in)
            bias = torch.cat([linear.bias for linear in linears]) if first.bias is not None else None
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        start = 0
        for linear in linears:  # the separate layers now read slices of the same memory
            rows = slice(start, start + linear.out_features)
            linear.weight = nn.Parameter(weight[rows], requires_grad=False)
            if bias is not None:
                linear.bias = nn.Parameter(bias[rows], requires_grad=False)
            start += linear.out_features


class SideBySideLinears(SplitOutputs, nn.Module):
    """Linear layers of different precisions that share their input, each run as it is, outputs side by side:
    (..., in) -> (..., sum of outputs), what a fused module of them would compute."""

    def __init__(self, linears: list[nn.Module]):
        super().__init__()
        self.linears = nn.ModuleList(linears)
        self.sizes = [linear.out_features for linear in linears]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([linear(x) for linear in self.linears], dim=-1)
