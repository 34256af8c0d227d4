"""The engine's fast call paths for the repeated layers, and a switch back to the plain modules.

The model modules are built from transformers' classes and stay as they are. For the fast path the
engine gives every repeated layer a second way to run, the same function with fewer, larger GEMMs:

- SigLIP and Qwen3 layers compute query, key and value in one GEMM, and Qwen3 its gate and up
  projections in another (at batch 1 these GEMMs are too small to fill an H100, so three launches cost
  about three times one);
- the action head's attention blocks do the same through ``Attention.fuse_projections``;
- on CUDA, the tanh-GELU after SigLIP's and the head's first MLP GEMM runs in that GEMM's epilogue
  (cuBLASLt), one kernel instead of two.

The fused weights are the original ones concatenated, and the original Linear modules keep views of them:
nothing is stored twice. Each layer's fast call path is then optionally ``torch.compile``d (regional
compilation: every SigLIP layer shares one compiled program, every Qwen3 layer another, the head's blocks
two more). ``FastLayers.plain()`` switches back to the modules as transformers wrote them, uncompiled:
the eager reference that ``bench --compare eager`` and the numerics tests measure the fast path against.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, apply_rotary_pos_emb
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

from .compilation import compile_arguments, compiled_regions
from .model.action_head import DiTBlock, SelfAttentionBlock
from .model.fused_linear import register_fused


def siglip_layer_forward(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs) -> torch.Tensor:
    """``SiglipEncoderLayer.forward`` with one q/k/v GEMM; the vision tower attends to every patch."""
    if attention_mask is not None:
        raise ValueError("the fused SigLIP layer attends to every patch; got an attention mask")
    hidden = hidden_states + self.self_attn.out_proj(siglip_attention(self, self.layer_norm1(hidden_states)))
    mlp = self.mlp
    return hidden + mlp.fc2(linear_gelu_tanh(self.layer_norm2(hidden), mlp.fc1))


def qwen3_layer_forward(self, hidden_states: torch.Tensor, attention_mask=None, position_ids=None,
                        past_key_values=None, use_cache=False, position_embeddings=None, **kwargs) -> torch.Tensor:  # fmt: skip
    """``Qwen3DecoderLayer.forward`` with one q/k/v GEMM and one gate/up GEMM; causal, no cache, as
    ``run_decoder`` calls it (right padding needs no mask)."""
    if attention_mask is not None or past_key_values is not None:
        raise ValueError("the fused Qwen3 layer runs causal attention without a mask or a KV cache")
    attn, mlp = self.self_attn, self.mlp
    out = qwen3_attention(self, self.input_layernorm(hidden_states), position_embeddings)  # (B, L, Hq d)
    hidden = hidden_states + attn.o_proj(out)
    gate, up = F.linear(self.post_attention_layernorm(hidden), mlp.fused_gate_up_weight).chunk(2, dim=-1)
    return hidden + mlp.down_proj(mlp.act_fn(gate) * up)


def siglip_attention(self, normed: torch.Tensor) -> torch.Tensor:
    """A SigLIP layer's self-attention up to its output projection, q/k/v in one GEMM: (N, T, C) -> (N, T, C)."""
    attn = self.self_attn
    batch, length, _ = normed.shape
    qkv = F.linear(normed, attn.fused_qkv_weight, attn.fused_qkv_bias)  # (N, T, 3 H d)
    q, k, v = qkv.view(batch, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (N, H, T, d)
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)  # (N, H, T, d)
    return out.transpose(1, 2).reshape(batch, length, -1)


def qwen3_attention(self, normed: torch.Tensor, position_embeddings) -> torch.Tensor:
    """A Qwen3 layer's causal self-attention up to its output projection, q/k/v in one GEMM, q/k norms and
    rotary positions: (B, L, D) -> (B, L, Hq d)."""
    attn = self.self_attn
    batch, length, _ = normed.shape
    qkv = F.linear(normed, attn.fused_qkv_weight, attn.fused_qkv_bias)
    q, k, v = qkv.split(attn.fused_qkv_sizes, dim=-1)  # (B, L, Hq d), (B, L, Hkv d), (B, L, Hkv d)
    q = attn.q_norm(q.view(batch, length, -1, attn.head_dim)).transpose(1, 2)  # (B, Hq, L, d)
    k = attn.k_norm(k.view(batch, length, -1, attn.head_dim)).transpose(1, 2)  # (B, Hkv, L, d)
    v = v.view(batch, length, -1, attn.head_dim).transpose(1, 2)  # (B, Hkv, L, d)
    q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling, enable_gqa=True)
    return out.transpose(1, 2).reshape(batch, length, -1)


def self_attention_block_forward(self, x: torch.Tensor) -> torch.Tensor:
    """``SelfAttentionBlock.forward`` (the head's VL self-attention) with the GELU in the GEMM epilogue."""
    x = x + self.attn1(self.norm1(x))
    return x + self.ff.net[2](linear_gelu_tanh(self.norm3(x), self.ff.net[0].proj))


def dit_block_forward(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, context_kv=None) -> torch.Tensor:
    """``DiTBlock.forward`` with the GELU in the GEMM epilogue."""
    x = x + self.attn1(self.norm1(x, scale, shift), context_kv)
    return x + self.ff.net[2](linear_gelu_tanh(self.norm3(x), self.ff.net[0].proj))


def linear_gelu_tanh(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """gelu(linear(x), approximate="tanh"): on CUDA one cuBLASLt GEMM with a GELU epilogue (which is the
    tanh approximation there; on the CPU the same aten op would use the exact GELU, so it is not used)."""
    if not x.is_cuda or linear.bias is None:
        return F.gelu(linear(x), approximate="tanh")
    out = torch._addmm_activation(linear.bias, x.flatten(0, -2), linear.weight.t(), use_gelu=True)  # (N, out)
    return out.view(*x.shape[:-1], -1)


def fuse_siglip_layer(layer: nn.Module) -> None:
    """One q/k/v weight and bias on a SigLIP layer's attention."""
    attn = layer.self_attn
    register_fused(attn, "fused_qkv", [attn.q_proj, attn.k_proj, attn.v_proj])


def fuse_qwen3_layer(layer: nn.Module) -> None:
    """One q/k/v weight on a Qwen3 layer's attention, one gate/up weight on its MLP."""
    attn, mlp = layer.self_attn, layer.mlp
    if getattr(attn, "sliding_window", None) is not None:
        raise ValueError("the fused Qwen3 layer has no sliding-window attention; run with compile off")
    linears = [attn.q_proj, attn.k_proj, attn.v_proj]
    register_fused(attn, "fused_qkv", linears)
    attn.fused_qkv_sizes = [linear.out_features for linear in linears]
    register_fused(mlp, "fused_gate_up", [mlp.gate_proj, mlp.up_proj])  # no biases: fused_gate_up_bias is None


def fuse_head_block(block: nn.Module) -> None:
    """q/k/v (self-attention) or k/v (cross-attention) in one weight, in an action-head block."""
    block.attn1.fuse_projections(with_query=not getattr(block, "cross", False))


# Per repeated-layer class (``compiled_regions``): how to fuse its weights, and its fast forward.
FAST_PATHS = {
    SiglipEncoderLayer: (fuse_siglip_layer, siglip_layer_forward),
    Qwen3DecoderLayer: (fuse_qwen3_layer, qwen3_layer_forward),
    SelfAttentionBlock: (fuse_head_block, self_attention_block_forward),
    DiTBlock: (fuse_head_block, dit_block_forward),
}


class FastLayers:
    """Installs the fused (and, with ``compile``, compiled) call path on every repeated layer of a
    ``GrootN15``; ``plain()`` runs the modules as built instead."""

    def __init__(self, model: nn.Module, compile: bool, mode: str = "default", dynamic_lengths: bool = True):
        if compile and not dynamic_lengths:
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        self.calls, self.attentions = [], []
        compile_kwargs = compile_arguments(mode) if compile else {}
        for layer, lengths_vary in compiled_regions(model):
            fuse, forward = FAST_PATHS[type(layer)]
            fuse(layer)
            # The replaced weights' blocks go back to the driver layer by layer, so fusing raises the peak
            # memory by one layer's weights at most (a no-op without CUDA).
            torch.cuda.empty_cache()
            if isinstance(layer, (SelfAttentionBlock, DiTBlock)):  # our Attention: fused on a flag
                self.attentions.append(layer.attn1)
            call = types.MethodType(forward, layer)
            if compile:
                # None: PyTorch's default, dynamic only once a shape changes; False: one program per shape
                dynamic = (True if lengths_vary else None) if dynamic_lengths else False
                call = torch.compile(call, dynamic=dynamic, **compile_kwargs)
            self.calls.append((layer, call))
        self.enable(True)

    def enable(self, on: bool) -> None:
        # nn.Module.__call__ runs ``_compiled_call_impl`` when set: the hook ``Module.compile`` uses too.
        for layer, call in self.calls:
            layer._compiled_call_impl = call if on else None
        for attention in self.attentions:
            attention.fused = on

    @contextmanager
    def plain(self) -> Iterator[None]:
        """The model as built: separate projections, no compiled code (the eager reference)."""
        self.enable(False)
        try:
            yield
        finally:
            self.enable(True)
