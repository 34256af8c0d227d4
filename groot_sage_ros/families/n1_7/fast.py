"""GR00T N1.7's fast regions: every repeated layer as one function with fewer, larger GEMMs.

Qwen3-VL vision blocks attend within each frame, batched (N, 256, C) instead of transformers' packed
per-image loop, with the tanh-GELU in the first MLP GEMM's epilogue on CUDA; the text layers are Qwen3
layers (q/k/v and gate/up fused: ``common.fast_blocks``); the action head's blocks as N1.5's, the DiT's
cross blocks with their text or image mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import FastRegion
from ..common.fast_blocks import (
    QWEN3_VARYING_DIMS,
    FastQwen3Layer,
    head_regions,
    linear_gelu_tanh,
    qwen3_layer,
)
from .model import GrootN17


class FastVisionBlock(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        attn, mlp = block.attn, block.mlp
        self.qkv, self.proj, self.fc1, self.fc2 = attn.qkv, attn.proj, mlp.linear_fc1, mlp.linear_fc2
        self.norm1, self.norm2 = block.norm1, block.norm2
        self.heads, self.head_dim = attn.num_heads, attn.head_dim


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def vision_block(fast: FastVisionBlock, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``Qwen3VLVisionBlock.forward`` for frames of one size: hidden (N, T, C), cos and sin (T, d); the
    rotation in float32, as ``apply_rotary_pos_emb_vision`` does."""
    n, length, _ = hidden.shape
    qkv = fast.qkv(fast.norm1(hidden)).view(n, length, 3, fast.heads, fast.head_dim)
    q, k, v = qkv.unbind(2)  # (N, T, H, d)
    cos, sin = cos[None, :, None].float(), sin[None, :, None].float()  # (1, T, 1, d)
    q = (q.float() * cos + rotate_half(q.float()) * sin).to(v.dtype)
    k = (k.float() * cos + rotate_half(k.float()) * sin).to(v.dtype)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (N, H, T, d)
    hidden = hidden + fast.proj(out.transpose(1, 2).reshape(n, length, -1))
    return hidden + fast.fc2(linear_gelu_tanh(fast.norm2(hidden), fast.fc1))


def fast_regions(model: GrootN17) -> list[FastRegion]:
    """Vision blocks always see 256 patches a frame; the text layers and the head's blocks see the prompt's
    length, so those regions are compiled with dynamic shapes."""
    regions = []
    if model.has_backbone:
        backbone = model.backbone
        regions += [
            FastRegion("vision", backbone.visual.blocks, FastVisionBlock, vision_block),
            FastRegion("language", backbone.language_model.layers, FastQwen3Layer, qwen3_layer, QWEN3_VARYING_DIMS),
        ]
    if model.has_action_head:
        regions += head_regions(model.action_head)
    return regions
