"""Fused layer functions both families' fast regions use: Qwen3 decoder layers (N1.5's Qwen3, N1.7's
Qwen3-VL text model: the same computation) and the flow-matching heads' blocks.

Each ``Fast*`` module owns the fused projections (``FusedLinear``: one GEMM where the reference runs two
or three) and shares the layer's other modules; the function beside it computes the layer from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

from ...fastpath.fusion import fuse_linears
from ..base import FastRegion


class FastQwen3Layer(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        if getattr(attn, "sliding_window", None) is not None:
            raise ValueError("the fused Qwen3 layer has no sliding-window attention; run with compile off")
        self.qkv = fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj])
        self.gate_up = fuse_linears([mlp.gate_proj, mlp.up_proj])
        self.o_proj, self.down_proj, self.act_fn = attn.o_proj, mlp.down_proj, mlp.act_fn
        self.input_norm, self.post_attention_norm = layer.input_layernorm, layer.post_attention_layernorm
        self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.head_dim, self.scaling = attn.head_dim, attn.scaling


QWEN3_VARYING_DIMS = ((0, 1), (0, 1), (0, 1))  # batch and length of hidden, cos and sin


def qwen3_layer(fast: FastQwen3Layer, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``Qwen3DecoderLayer.forward`` with one q/k/v GEMM and one gate/up GEMM; causal, no mask, no cache
    (right padding needs no mask: backbone.run_decoder). hidden (B, L, D), cos and sin (1, L, d)."""
    batch, length, _ = hidden.shape
    q, k, v = fast.qkv.split(fast.input_norm(hidden))  # (B, L, Hq d), (B, L, Hkv d), (B, L, Hkv d)
    q = fast.q_norm(q.view(batch, length, -1, fast.head_dim)).transpose(1, 2)  # (B, Hq, L, d)
    k = fast.k_norm(k.view(batch, length, -1, fast.head_dim)).transpose(1, 2)  # (B, Hkv, L, d)
    v = v.view(batch, length, -1, fast.head_dim).transpose(1, 2)  # (B, Hkv, L, d)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=fast.scaling, enable_gqa=True)
    hidden = hidden + fast.o_proj(out.transpose(1, 2).reshape(batch, length, -1))  # (B, L, D)
    gate, up = fast.gate_up.split(fast.post_attention_norm(hidden))
    return hidden + fast.down_proj(fast.act_fn(gate) * up)


class FastHeadBlock(nn.Module):
    """An action-head block (VL self-attention or DiT): q/k/v fused for self-attention, q alone for
    cross-attention (its keys and values come from ``FastContextKV``, once per chunk)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        attn = block.attn1
        self.cross = getattr(block, "cross", False)
        self.qkv = attn.to_q if self.cross else fuse_linears([attn.to_q, attn.to_k, attn.to_v])
        self.out, self.heads = attn.to_out[0], attn.heads
        self.norm1, self.norm3 = block.norm1, block.norm3
        self.ff_in, self.ff_out = block.ff.net[0].proj, block.ff.net[2]

    def attend(self, x: torch.Tensor, kv, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) already normed -> attention output after ``to_out`` (B, T, D); ``mask`` (B, 1, 1, S)
        bool: the context tokens a cross block attends to (None: all)."""
        batch, length, _ = x.shape
        if kv is None:
            q, k, v = (split_heads(t, self.heads) for t in self.qkv.split(x))
        else:
            q, (k, v) = split_heads(self.qkv(x), self.heads), kv
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, d)
        return self.out(out.transpose(1, 2).reshape(batch, length, -1))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ff_out(linear_gelu_tanh(self.norm3(x), self.ff_in))


def self_attention_block(fast: FastHeadBlock, x: torch.Tensor) -> torch.Tensor:
    """``SelfAttentionBlock.forward`` (the head's VL self-attention), fused."""
    return fast.feed_forward(x + fast.attend(fast.norm1(x), None))


def dit_block(
    fast: FastHeadBlock, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, kv=None, mask=None
) -> torch.Tensor:
    """``DiTBlock.forward``, fused: x (B, T, D), this step's modulation (B, D), a cross block's keys/values
    and context mask."""
    return fast.feed_forward(x + fast.attend(fast.norm1(x, scale, shift), kv, mask))


class FastContextKV(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.kv, self.heads = fuse_linears([block.attn1.to_k, block.attn1.to_v]), block.attn1.heads


def context_kv(fast: FastContextKV, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A cross block's keys and values (B, H, S, d) of the context (B, S, C), in one GEMM."""
    k, v = fast.kv.split(context)
    return split_heads(k, fast.heads), split_heads(v, fast.heads)


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)  # (B, T, H*d) -> (B, H, T, d)


def linear_gelu_tanh(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """gelu(linear(x), approximate="tanh"): on CUDA one cuBLASLt GEMM with a GELU epilogue (which is the
    tanh approximation there; on the CPU the same aten op would use the exact GELU, so it is not used). The
    fused op has no derivative: RTC's guided mode, which differentiates the head, takes the plain one."""
    if not x.is_cuda or type(linear) is not nn.Linear or linear.bias is None or torch.is_grad_enabled():
        return F.gelu(linear(x), approximate="tanh")
    out = torch._addmm_activation(linear.bias, x.flatten(0, -2), linear.weight.t(), use_gelu=True)  # (N, out)
    return out.view(*x.shape[:-1], -1)


def head_regions(head: nn.Module) -> list[FastRegion]:
    """A flow-matching head's regions (both families' heads have these parts): its VL self-attention
    blocks, the cross blocks' context keys and values, the DiT blocks. Batch and prompt length vary: x (B, L,
    D) and context (B, S, C); the DiT's x (B, T, D), scale and shift (B, D), kv (B, H, S, d), mask (B, 1, 1, S)."""
    self_attention, blocks = head.vl_self_attention.transformer_blocks, head.model.transformer_blocks
    return [
        FastRegion("vl_self_attention", self_attention, FastHeadBlock, self_attention_block, ((0, 1),)),
        FastRegion("context_kv", head.model.cross_blocks(), FastContextKV, context_kv, ((0, 1),)),
        FastRegion("dit", blocks, FastHeadBlock, dit_block, ((0,), (0,), (0,), (0, 2), (0, 3))),
    ]
