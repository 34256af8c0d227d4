"""GR00T N1.5's fast regions: every repeated layer as one function with fewer, larger GEMMs.

The model's modules are built from transformers' classes (and ours, for the head) and stay as they are:
the reference path runs them. For the fast path each layer gets a small module of its own (built after
loading) that owns the fused projections and shares the layer's other modules:

- SigLIP and Qwen3 layers compute query, key and value in one GEMM, and Qwen3 its gate and up
  projections in another (``FusedLinear``: the separate Linear layers keep views of the fused weight);
- the action head's blocks do the same for q/k/v (self-attention) or k/v (the context of cross-attention);
- on CUDA, the tanh-GELU after SigLIP's and the head's first MLP GEMM runs in that GEMM's epilogue
  (cuBLASLt), one kernel instead of two.

The functions below compute a layer from its fast module; the engine compiles each once per region (every
SigLIP layer shares one program, every Qwen3 layer another) and passes the model one callable per layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...fastpath.fusion import fuse_linears
from ..base import FastRegion
from ..common.fast_blocks import (
    QWEN3_VARYING_DIMS,
    FastQwen3Layer,
    head_regions,
    linear_gelu_tanh,
    qwen3_layer,
)
from .model import GrootN15


class FastSiglipLayer(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj])
        self.out_proj, self.fc1, self.fc2 = attn.out_proj, mlp.fc1, mlp.fc2
        self.norm1, self.norm2 = layer.layer_norm1, layer.layer_norm2
        self.heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale


def siglip_layer(fast: FastSiglipLayer, hidden: torch.Tensor) -> torch.Tensor:
    """``SiglipEncoderLayer.forward`` with one q/k/v GEMM; the vision tower attends to every patch: (N, T, C)."""
    batch, length, _ = hidden.shape
    qkv = fast.qkv(fast.norm1(hidden))  # (N, T, 3 H d)
    q, k, v = qkv.view(batch, length, 3, fast.heads, fast.head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (N, H, T, d)
    out = F.scaled_dot_product_attention(q, k, v, scale=fast.scale)  # (N, H, T, d)
    hidden = hidden + fast.out_proj(out.transpose(1, 2).reshape(batch, length, -1))
    return hidden + fast.fc2(linear_gelu_tanh(fast.norm2(hidden), fast.fc1))


def fast_regions(model: GrootN15) -> list[FastRegion]:
    """SigLIP layers always see 256 tokens per image; the LLM's and the action head's inputs are as long as
    the prompt, so those regions are compiled with dynamic shapes (one program for every length)."""
    regions = []
    if model.has_backbone:
        eagle = model.backbone.eagle_model
        regions += [
            FastRegion("vision", eagle.vision_model.vision_model.encoder.layers, FastSiglipLayer, siglip_layer),
            FastRegion("language", eagle.language_model.model.layers, FastQwen3Layer, qwen3_layer, QWEN3_VARYING_DIMS),
        ]
    if model.has_action_head:
        regions += head_regions(model.action_head)
    return regions
