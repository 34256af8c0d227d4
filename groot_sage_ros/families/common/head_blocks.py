"""Blocks of GR00T's flow-matching action heads, shared by the families (checkpoint key names kept).

Per-embodiment linear layers, the action encoder, multi-head attention with biases, the GELU-tanh MLP, the
timestep-modulated LayerNorm and the timestep embedding, with the key names of NVIDIA's checkpoints;
no diffusers dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class CategorySpecificLinear(nn.Module):
    """One linear layer per embodiment; weights laid out (num_categories, in, out) as in the checkpoint."""

    def __init__(self, num_categories: int, in_dim: int, out_dim: int):
        super().__init__()
        self.W = nn.Parameter(0.02 * torch.randn(num_categories, in_dim, out_dim))
        self.b = nn.Parameter(torch.zeros(num_categories, out_dim))

    def select(self, category: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights of a batch's embodiments: (B, in, out) and (B, 1, out), gathered (copied) once."""
        return self.W[category], self.b[category].unsqueeze(1)

    def forward(self, x: torch.Tensor, category: torch.Tensor | SelectedWeights) -> torch.Tensor:
        # x (B, T, in), category (B,) ids or the weights select_embodiments gathered -> (B, T, out)
        weight, bias = category[self] if isinstance(category, SelectedWeights) else self.select(category)
        return torch.bmm(x, weight) + bias


class SelectedWeights(dict):
    """Each CategorySpecificLinear's weights for one batch's embodiments (``select_embodiments``): passed
    where the embodiment ids would be, so that the Euler steps of a chunk gather them once, not per step."""


def select_embodiments(module: nn.Module, category: torch.Tensor) -> SelectedWeights:
    return SelectedWeights(
        {layer: layer.select(category) for layer in module.modules() if isinstance(layer, CategorySpecificLinear)}
    )


class CategorySpecificMLP(nn.Module):
    def __init__(self, num_categories: int, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.layer1 = CategorySpecificLinear(num_categories, in_dim, hidden_dim)
        self.layer2 = CategorySpecificLinear(num_categories, hidden_dim, out_dim)

    def forward(self, x: torch.Tensor, category: torch.Tensor | SelectedWeights) -> torch.Tensor:
        return self.layer2(F.relu(self.layer1(x, category)), category)


def sinusoid(positions: torch.Tensor, width: int) -> torch.Tensor:
    """(...,) integer positions -> (..., width): [sin | cos], frequencies exp(-ln(1e4) i / (width/2))."""
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float().unsqueeze(-1) * freqs  # (..., half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class MultiEmbodimentActionEncoder(nn.Module):
    def __init__(self, action_dim: int, width: int, num_categories: int):
        super().__init__()
        self.width = width
        self.W1 = CategorySpecificLinear(num_categories, action_dim, width)
        self.W2 = CategorySpecificLinear(num_categories, 2 * width, width)
        self.W3 = CategorySpecificLinear(num_categories, width, width)

    def forward(self, actions: torch.Tensor, bucket: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        # actions (B, T, A), bucket (B,) -> (B, T, width)
        a = self.W1(actions, category)  # (B, T, W)
        tau = sinusoid(bucket.unsqueeze(1).expand(-1, actions.shape[1]), self.width).to(a.dtype)  # (B, T, W)
        h = F.silu(self.W2(torch.cat([a, tau], dim=-1), category))
        return self.W3(h, category)


class Attention(nn.Module):
    """Multi-head attention with biases; ``to_out.0`` as in the checkpoint.

    Self-attention when called without ``kv``; cross-attention to the keys and values that
    ``project_context`` made of a context (computed once per action chunk, not once per step).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        inner, context_dim = heads * head_dim, context_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(context_dim, inner)
        self.to_v = nn.Linear(context_dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)  # (B, T, H*d) -> (B, H, T, d)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, S, d) of a context (B, S, C)."""
        return self.split_heads(self.to_k(context)), self.split_heads(self.to_v(context))

    def forward(
        self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, L, D); ``mask`` (B, 1, 1, S) bool: the context tokens to attend to (N1.7's DiT; N1.5 uses none)."""
        batch, length, _ = x.shape
        q, (k, v) = self.split_heads(self.to_q(x)), kv if kv is not None else self.project_context(x)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, d)
        return self.to_out[0](out.transpose(1, 2).reshape(batch, length, -1))


class GELUProjection(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """GELU-tanh MLP, keys ``net.0.proj`` and ``net.2``."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GELUProjection(dim, mult * dim), nn.Dropout(0.0), nn.Linear(mult * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine, modulated by the timestep: LN(x) * (1 + scale) + shift, (scale, shift) order."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=1e-5, elementwise_affine=False)

    def modulation(self, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., D) timestep embeddings -> (scale, shift), each (..., D)."""
        scale, shift = self.linear(F.silu(temb)).chunk(2, dim=-1)
        return scale, shift

    def forward(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        # x (B, T, D), scale and shift (B, D)
        return self.norm(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, channels: int = 256):
        super().__init__()
        self.channels = channels
        self.linear_1 = nn.Linear(channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, bucket: torch.Tensor) -> torch.Tensor:
        # diffusers Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1): [cos | sin], exp(-ln(1e4) i / 127)
        half = self.channels // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=bucket.device, dtype=torch.float32) / (half - 1)
        )
        angles = bucket.float().unsqueeze(-1) * freqs  # (B, 128)
        features = torch.cat([angles.cos(), angles.sin()], dim=-1).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(features)))  # (B, D)


class TimestepEncoder(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(dim)

    def forward(self, bucket: torch.Tensor) -> torch.Tensor:
        return self.timestep_embedder(bucket)


class SelfAttentionBlock(nn.Module):
    """Pre-LN transformer block (affine LayerNorms ``norm1``/``norm3``), used by vl_self_attention."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        return x + self.ff(self.norm3(x))


class SelfAttentionTransformer(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, layers: int):
        super().__init__()
        self.transformer_blocks = nn.ModuleList([SelfAttentionBlock(dim, heads, head_dim) for _ in range(layers)])

    def forward(self, x: torch.Tensor, block_calls=None) -> torch.Tensor:
        for k, block in enumerate(self.transformer_blocks):
            x = block_calls[k](x) if block_calls is not None else block(x)
        return x


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None):
        super().__init__()
        self.norm1 = AdaLayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, context_dim)
        self.cross = context_dim is not None
        self.norm3 = nn.LayerNorm(dim, eps=1e-5, elementwise_affine=False)
        self.ff = FeedForward(dim)

    def forward(
        self,
        x: torch.Tensor,
        scale: torch.Tensor,
        shift: torch.Tensor,
        context_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, D); this step's modulation (B, D); for a cross block, the context's keys and values and
        which context tokens it attends to (B, 1, 1, S) bool, None: all."""
        x = x + self.attn1(self.norm1(x, scale, shift), context_kv, mask)
        return x + self.ff(self.norm3(x))


@dataclass
class DiTCondition:
    """What the DiT needs besides its tokens, for ``steps`` integration steps: made once per action chunk,
    because the context and the steps' timestep buckets do not change between steps."""

    context_kv: list[tuple[torch.Tensor, torch.Tensor] | None]  # per block: keys, values (B, H, S, d); None: self
    modulation: list[tuple[torch.Tensor, torch.Tensor]]  # per block: (scale, shift), each (steps, B, D)
    out_modulation: tuple[torch.Tensor, torch.Tensor]  # (shift, scale) of norm_out, each (steps, B, D)
    masks: list[torch.Tensor | None]  # per block: the context tokens a cross block attends to; None: all


class DiT(nn.Module):
    """GR00T's diffusion transformer (both families): timestep-modulated blocks, cross-attention to the VL
    tokens in the blocks ``attends`` names (per block: "all", "text" or "image" tokens of the prompt; None:
    self-attention), and a modulated output projection. What does not change between Euler steps is made
    once per chunk (``condition``)."""

    def __init__(
        self, dim: int, heads: int, head_dim: int, output_dim: int, context_dim: int, attends: list[str | None]
    ):
        super().__init__()
        self.attends = attends
        self.timestep_encoder = TimestepEncoder(dim)
        self.transformer_blocks = nn.ModuleList(
            [DiTBlock(dim, heads, head_dim, context_dim if kind else None) for kind in attends]
        )
        self.norm_out = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.proj_out_1 = nn.Linear(dim, 2 * dim)
        self.proj_out_2 = nn.Linear(dim, output_dim)

    def cross_blocks(self) -> list[DiTBlock]:
        return [block for block in self.transformer_blocks if block.cross]

    def condition(
        self,
        context: torch.Tensor,  # (B, S, C)
        buckets: torch.Tensor,  # (steps, B)
        calls=None,
        token_mask: torch.Tensor | None = None,  # (B, S) bool: real tokens; None: every cross block sees all
        image_mask: torch.Tensor | None = None,  # (B, S) bool: image tokens
    ) -> DiTCondition:
        """The cross blocks' context keys/values (and, given the masks, which tokens each attends to), and
        every step's modulation, once per chunk. Without masks (N1.5, whose reference ignores them) every
        cross block attends to every token."""
        steps, batch = buckets.shape
        temb = self.timestep_encoder(buckets.reshape(-1)).view(steps, batch, -1)  # (steps, B, D)
        project = (calls or {}).get("context_kv") or [block.attn1.project_context for block in self.cross_blocks()]
        projections = iter(project)
        masks = [None] * len(self.attends)
        if token_mask is not None:
            by_kind = {
                "text": (~image_mask & token_mask)[:, None, None, :],  # (B, 1, 1, S)
                "image": (image_mask & token_mask)[:, None, None, :],
                "all": token_mask[:, None, None, :],
            }
            masks = [by_kind[kind] if kind else None for kind in self.attends]
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=-1)  # (shift, scale) order here
        return DiTCondition(
            context_kv=[next(projections)(context) if block.cross else None for block in self.transformer_blocks],
            modulation=[block.norm1.modulation(temb) for block in self.transformer_blocks],
            out_modulation=(shift, scale),
            masks=masks,
        )

    def forward(self, tokens: torch.Tensor, condition: DiTCondition, step: int = 0, calls=None) -> torch.Tensor:
        # tokens (B, T, D) -> (B, T, out), at integration step ``step`` of ``condition``
        block_calls = (calls or {}).get("dit") or self.transformer_blocks
        for call, (scale, shift), kv, mask in zip(
            block_calls, condition.modulation, condition.context_kv, condition.masks
        ):
            tokens = call(tokens, scale[step], shift[step], kv, mask)
        shift, scale = (t[step] for t in condition.out_modulation)  # (B, D) each
        tokens = self.norm_out(tokens) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
        return self.proj_out_2(tokens)
