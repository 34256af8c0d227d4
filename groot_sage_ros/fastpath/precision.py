"""The precision of the repeated layers' Linear modules: a module swap at load, from the fp16/bf16 weights.

- ``fp16``: the checkpoint's weights in the engine's dtype (no swap).
- ``int8_weight``: int8 weights with one scale per output channel (symmetric, round to nearest), activations
  in the engine's dtype; the product is ``x @ (W_int8 * scale)^T``, the dequantised weight's arithmetic,
  computed by ``weight_only_gemm.linear`` (dequantised in traced code, or read once by its kernel where that
  is on). Halves the weights' memory; for Ampere and Orin, and the CPU.
- ``fp8``: e4m3 weights with per-output-channel scales. Calls of ``fp8_min_rows`` rows (tokens) or more
  quantise the activations per token too and multiply on the FP8 tensor cores (``torch._scaled_mm``: compute
  capability 8.9 or newer); smaller calls, where quantising the activations and the FP8 GEMM cost more than
  they save, widen the fp8 weight to the activations' dtype, as int8_weight does. One copy of each weight.

``quantize_layers`` swaps every plain ``nn.Linear`` inside the given layers (the family's fast regions: the
SigLIP and Qwen3 layers, the head's VL self-attention and DiT blocks); norms and the small encoders stay in
the engine's dtype, and so do embeddings, except that int8_weight also stores the vocabulary table as int8
rows (``quantize_token_tables``: the table is a large share of the weights). The swap is deterministic.
Fusion (``fusion.fuse_linears``) then joins swapped modules of one kind with their ``concatenate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..api import PRECISION_NAMES
from .fusion import SplitOutputs
from .weight_only_gemm import dequantize, kernel_rows, linear

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
# Hopper's faster FP8 accumulation, as torchao's float8 inference uses; on the H200 its accuracy cost was
# within noise of exact accumulation (benchmarks/archive/h200_precision.json)
FP8_FAST_ACCUMULATION = True


class Int8WeightLinear(SplitOutputs, nn.Module):
    """y = x @ (W * scale)^T + b with W int8 (N, K), scale (N,) in the activations' dtype."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.sizes = [self.out_features]
        self.register_buffer("weight", weight)  # (N, K) int8
        self.register_buffer("scale", scale)  # (N,)
        self.register_buffer("bias", bias)  # (N,) or None
        self.kernel_rows = kernel_rows(weight)  # calls of at most this many rows take the weight-only kernel

    @classmethod
    def from_linear(cls, linear: nn.Linear, options: "PrecisionOptions") -> "Int8WeightLinear":
        w = linear.weight.detach()  # (N, K)
        scale = (w.abs().amax(dim=1).float() / 127.0).clamp(min=1e-12)  # (N,)
        q = torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
        bias = linear.bias.detach() if linear.bias is not None else None
        return cls(q, scale.to(w.dtype), bias)

    def dequantized_weight(self) -> torch.Tensor:
        """(N, K) in the scale's dtype: what the product computes with."""
        return dequantize(self.weight, self.scale, self.scale.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the weight dequantised before the product, (x @ W_int8^T) alone can overflow fp16 where the scale is
        # small: in traced code (one fused kernel), or inside the weight-only kernel (fp32 accumulation)
        return linear(x, self.weight, self.scale, self.bias, self.kernel_rows)  # (..., N)

    @classmethod
    def concatenate(cls, modules: list["Int8WeightLinear"]) -> "Int8WeightLinear":
        fused = cls(
            torch.cat([m.weight for m in modules]),
            torch.cat([m.scale for m in modules]),
            torch.cat([m.bias for m in modules]) if modules[0].bias is not None else None,
        )
        fused.sizes = [m.out_features for m in modules]
        start = 0
        for m in modules:  # the separate modules now read slices of the fused buffers
            rows = slice(start, start + m.out_features)
            m.weight, m.scale = fused.weight[rows], fused.scale[rows]
            if m.bias is not None:
                m.bias = fused.bias[rows]
            start += m.out_features
        return fused


class Fp8Linear(SplitOutputs, nn.Module):
    """fp8 (e4m3) weights with per-channel scales, activations quantised per token in the call."""

    def __init__(
        self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, min_rows: int, dtype: torch.dtype
    ):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.sizes = [self.out_features]
        self.min_rows = min_rows
        self.dtype = dtype  # the engine's: what the layer computed in before the swap
        self.register_buffer("weight", weight)  # (N, K) float8_e4m3fn
        self.register_buffer("scale", scale)  # (1, N) float32
        self.register_buffer("bias", bias)
        self.kernel_rows = kernel_rows(weight)

    @classmethod
    def from_linear(cls, linear: nn.Linear, options: "PrecisionOptions") -> "Fp8Linear":
        w = linear.weight.detach()  # (N, K)
        scale = (w.abs().amax(dim=1).float() / E4M3_MAX).clamp(min=1e-12)  # (N,)
        q = (w.float() / scale[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        bias = linear.bias.detach() if linear.bias is not None else None
        return cls(q, scale[None, :], bias, options.fp8_min_rows, w.dtype)

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize(self.weight, self.scale, self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows < self.min_rows:  # the fp8 weight widened to the activations' dtype (no fp16 copy kept)
            return linear(x, self.weight, self.scale, self.bias, self.kernel_rows)  # (..., N)
        x2 = x.reshape(rows, self.in_features)  # (M, K)
        x_scale = (x2.abs().amax(dim=-1, keepdim=True).float() / E4M3_MAX).clamp(min=1e-12)  # (M, 1)
        xq = (x2.float() / x_scale).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(
            xq,
            self.weight.t(),
            scale_a=x_scale,
            scale_b=self.scale,
            out_dtype=torch.bfloat16,
            use_fast_accum=FP8_FAST_ACCUMULATION,
        )
        out = out.to(x.dtype)  # (M, N): row-wise scaling produces bf16
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)

    @classmethod
    def concatenate(cls, modules: list["Fp8Linear"]) -> "Fp8Linear":
        fused = cls(
            torch.cat([m.weight for m in modules]),
            torch.cat([m.scale for m in modules], dim=1),
            torch.cat([m.bias for m in modules]) if modules[0].bias is not None else None,
            modules[0].min_rows,
            modules[0].dtype,
        )
        fused.sizes = [m.out_features for m in modules]
        start = 0
        for m in modules:
            rows = slice(start, start + m.out_features)
            m.weight, m.scale = fused.weight[rows], fused.scale[:, rows]
            if m.bias is not None:
                m.bias = fused.bias[rows]
            start += m.out_features
        return fused


class Int8Embedding(nn.Module):
    """A token embedding table as int8 rows with one scale per row; a looked-up row is dequantised."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight.shape
        self.register_buffer("weight", weight)  # (V, D) int8
        self.register_buffer("scale", scale)  # (V, 1) in the engine's dtype

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> "Int8Embedding":
        w = embedding.weight.detach()  # (V, D)
        scale = (w.abs().amax(dim=1, keepdim=True).float() / 127.0).clamp(min=1e-12)  # (V, 1)
        q = torch.round(w.float() / scale).clamp(-127, 127).to(torch.int8)
        return cls(q, scale.to(w.dtype))

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight.to(self.scale.dtype) * self.scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight).to(self.scale.dtype) * F.embedding(ids, self.scale)  # (..., D)


TOKEN_TABLE_ROWS = 65536  # an nn.Embedding this long is a vocabulary (N1.5: 151,680 x 2,048, 0.31 B parameters)


@dataclass(frozen=True)
class PrecisionOptions:
    fp8_min_rows: int = 64  # RuntimeConfig.fp8_min_rows


@dataclass(frozen=True)
class Precision:
    """A precision: the swap of one loaded Linear (None: none) and the gates ``quantize-check`` applies
    against fp16: the mean per-token feature cosine (NVIDIA's for its engines) and the largest mean action
    error ratio (the chunk's distance from fp16's as a fraction of ignoring the frame: quantize_check.py)."""

    name: str
    swap: Callable[[nn.Linear, PrecisionOptions], nn.Module] | None
    feature_gate: float
    action_ratio_gate: float
    needs_fp8: bool = False
    # The token table too: int8_weight's point is memory, and the table is an eighth of the model
    # (measured on the H200: with the head, 65 % of fp16's peak without it, 59 % with it).
    token_table: Callable[[nn.Embedding], nn.Module] | None = None


def fp8_swap(linear: nn.Linear, options: PrecisionOptions) -> nn.Module:
    """``Fp8Linear``, or the layer as it is where FP8 GEMMs cannot take its shape (sides not multiples of 16)."""
    if linear.in_features % 16 or linear.out_features % 16:
        return linear
    return Fp8Linear.from_linear(linear, options)


PRECISIONS: dict[str, Precision] = {
    "fp16": Precision("fp16", None, 1.0, 0.0),
    "int8_weight": Precision(
        "int8_weight", Int8WeightLinear.from_linear, 0.995, 0.1, token_table=Int8Embedding.from_embedding
    ),
    "fp8": Precision("fp8", fp8_swap, 0.99, 0.2, needs_fp8=True),
}
assert tuple(PRECISIONS) == PRECISION_NAMES, "the precision table and api.PRECISION_NAMES must name the same"


def check_supported(precision: str, device: torch.device) -> None:
    """ValueError, one line, when ``device`` cannot run ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {list(PRECISIONS)}")
    if not PRECISIONS[precision].needs_fp8:
        return
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    if capability is None or capability < (8, 9):
        have = f"compute capability {capability[0]}.{capability[1]}" if capability else "no FP8 tensor cores"
        raise ValueError(
            f"precision 'fp8' needs FP8 tensor cores (compute capability 8.9 or newer: Ada, Hopper, "
            f"Blackwell, Thor); {device} has {have}; use int8_weight or fp16 there"
        )


def replace_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` where ``root``'s submodule ``name`` (dotted) is."""
    owner_path, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(owner_path) if owner_path else root, leaf, module)


def linear_names(regions) -> dict[str, tuple[nn.Module, str]]:
    """Every plain ``nn.Linear`` of the regions' layers, by name ``<region>.<layer>.<path>`` (e.g.
    ``language.3.mlp.down_proj``): name -> (its layer, its path in the layer)."""
    by_module: dict[int, tuple[str, nn.Module, str]] = {}
    for region in regions:  # a layer in two regions (the DiT's cross blocks) takes the later region's name
        for index, layer in enumerate(region.layers):
            for path, module in layer.named_modules():
                if type(module) is nn.Linear:
                    by_module[id(module)] = (f"{region.name}.{index}.{path}", layer, path)
    return {name: (layer, path) for name, layer, path in by_module.values()}


def kept_by(patterns, names) -> Callable[[str], bool]:
    """Which Linear names ``patterns`` keep at fp16: a layer (``language.3``), one projection of a layer
    (``language.3.mlp.down_proj``), or a projection kind in every layer (``down_proj``, ``self_attn.o_proj``).
    ValueError naming a pattern that matches nothing (a typo would otherwise quantise what it meant to keep)."""

    def matches(pattern: str, name: str) -> bool:
        region, index, path = name.split(".", 2)
        return name == pattern or name.startswith(pattern + ".") or path == pattern or path.endswith("." + pattern)

    patterns = [str(p) for p in patterns or ()]
    for pattern in patterns:
        if not pattern or not any(matches(pattern, name) for name in names):
            layers = sorted({".".join(name.split(".")[:2]) for name in names})
            kinds = sorted({name.split(".", 2)[2].rsplit(".", 1)[-1] for name in names})
            raise ValueError(
                f"precision_keep_fp16: {pattern!r} names no layer or projection of this model; expected a layer "
                f"({layers[0]} .. {layers[-1]}), a projection of one, or a projection kind ({', '.join(kinds[:12])})"
            )
    return lambda name: any(matches(pattern, name) for pattern in patterns)


def quantize_layers(regions, precision: str, options: PrecisionOptions, keep=()) -> tuple[int, int]:
    """Swap every plain ``nn.Linear`` in the regions' layers as ``precision`` says, except those ``keep``
    (``kept_by``'s patterns) names; returns (swapped, kept at fp16). The swapped-out weights are dropped
    (their memory returns once nothing else holds them)."""
    swap = PRECISIONS[precision].swap
    names = linear_names(regions)
    kept = kept_by(keep, names)  # checked before anything is swapped
    if swap is None:
        return 0, 0
    count, held, previous = 0, 0, None
    for name, (layer, path) in names.items():
        if layer is not previous:  # layer by layer: the peak grows by one layer's fp16 weights at most
            torch.cuda.empty_cache()
            previous = layer
        if kept(name):
            held += 1
            continue
        linear = layer.get_submodule(path)
        swapped = swap(linear, options)
        replace_module(layer, path, swapped)
        count += swapped is not linear
    torch.cuda.empty_cache()
    return count, held


def quantize_token_tables(model: nn.Module, precision: str) -> int:
    """Swap the model's vocabulary-sized ``nn.Embedding`` tables where ``precision`` says so; returns how many."""
    swap = PRECISIONS[precision].token_table
    if swap is None:
        return 0
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Embedding and module.num_embeddings >= TOKEN_TABLE_ROWS
    ]
    for name, embedding in targets:
        replace_module(model, name, swap(embedding))
    torch.cuda.empty_cache()
    return len(targets)
