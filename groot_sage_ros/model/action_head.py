"""GR00T N1.5's flow-matching action head, in plain PyTorch with the checkpoint's key names.

    features (B, L, 2048) -> vlln -> vl_self_attention (4 blocks)                    = context (B, L, 2048)
    state (B, 1, 64) -> state_encoder                                                 (B, 1, 1536)
    noisy actions (B, 16, 32), bucket -> action_encoder + position_embedding[:16]     (B, 16, 1536)
    [state | future_tokens (32) | actions] (B, 49, 1536) -> DiT(context, bucket) -> action_decoder
    -> velocity of the last 16 tokens; Euler: x <- x + v / N for N buckets 0, 250, 500, 750

What does not change between the Euler steps (the context's keys and values in every cross-attention
block, each step's timestep modulation) is computed once per chunk (``DiT.condition``).

DiT blocks alternate: even blocks cross-attend to the context, odd blocks self-attend; each starts with a
timestep-conditioned LayerNorm. Written from architecture doc §4; no diffusers dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ActionHeadConfig
from .fused_linear import register_fused


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
    return SelectedWeights({layer: layer.select(category) for layer in module.modules()
                            if isinstance(layer, CategorySpecificLinear)})  # fmt: skip


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
    ``fuse_projections`` (as in diffusers) concatenates the q/k/v (or, for cross-attention, the k/v)
    weights so that one GEMM makes them; the separate Linear modules keep views of the same weights.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        inner, context_dim = heads * head_dim, context_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(context_dim, inner)
        self.to_v = nn.Linear(context_dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])
        self.fused = False  # use the fused weights (set by fuse_projections; the engine's plain path clears it)

    @torch.no_grad()
    def fuse_projections(self, with_query: bool) -> None:
        """One weight for q, k and v (``with_query``, self-attention) or for k and v (cross-attention)."""
        linears = [self.to_q, self.to_k, self.to_v] if with_query else [self.to_k, self.to_v]
        register_fused(self, "fused", linears)
        self.fused_with_query = with_query
        self.fused = True

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)  # (B, T, H*d) -> (B, H, T, d)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, S, d) of a context (B, S, C)."""
        if self.fused and not self.fused_with_query:
            k, v = F.linear(context, self.fused_weight, self.fused_bias).chunk(2, dim=-1)
        else:
            k, v = self.to_k(context), self.to_v(context)
        return self.split_heads(k), self.split_heads(v)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        batch, length, _ = x.shape
        if kv is not None:
            q, (k, v) = self.split_heads(self.to_q(x)), kv
        elif self.fused and self.fused_with_query:
            q, k, v = (self.split_heads(t) for t in F.linear(x, self.fused_weight, self.fused_bias).chunk(3, dim=-1))
        else:
            q, (k, v) = self.split_heads(self.to_q(x)), self.project_context(x)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, d); no mask: the reference ignores it
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x


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


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None):
        super().__init__()
        self.norm1 = AdaLayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, context_dim)
        self.cross = context_dim is not None
        self.norm3 = nn.LayerNorm(dim, eps=1e-5, elementwise_affine=False)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                context_kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """x (B, T, D); this step's modulation (B, D); for a cross block, the context's keys and values."""
        x = x + self.attn1(self.norm1(x, scale, shift), context_kv)
        return x + self.ff(self.norm3(x))


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, channels: int = 256):
        super().__init__()
        self.channels = channels
        self.linear_1 = nn.Linear(channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, bucket: torch.Tensor) -> torch.Tensor:
        # diffusers Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1): [cos | sin], exp(-ln(1e4) i / 127)
        half = self.channels // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=bucket.device, dtype=torch.float32) / (half - 1))
        angles = bucket.float().unsqueeze(-1) * freqs  # (B, 128)
        features = torch.cat([angles.cos(), angles.sin()], dim=-1).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(features)))  # (B, D)


class TimestepEncoder(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(dim)

    def forward(self, bucket: torch.Tensor) -> torch.Tensor:
        return self.timestep_embedder(bucket)


@dataclass
class DiTCondition:
    """What the DiT needs besides its tokens, for ``steps`` integration steps: made once per action chunk,
    because the context and the steps' timestep buckets do not change between steps."""

    context_kv: list[tuple[torch.Tensor, torch.Tensor] | None]  # per block: keys, values (B, H, S, d); None: self
    modulation: list[tuple[torch.Tensor, torch.Tensor]]  # per block: (scale, shift), each (steps, B, D)
    out_modulation: tuple[torch.Tensor, torch.Tensor]  # (shift, scale) of norm_out, each (steps, B, D)


class DiT(nn.Module):
    def __init__(self, cfg: ActionHeadConfig):
        super().__init__()
        dim = cfg.dit_heads * cfg.dit_head_dim
        self.timestep_encoder = TimestepEncoder(dim)
        self.transformer_blocks = nn.ModuleList([
            DiTBlock(dim, cfg.dit_heads, cfg.dit_head_dim, cfg.dit_cross_attention_dim if i % 2 == 0 else None)
            for i in range(cfg.dit_layers)
        ])  # fmt: skip
        self.norm_out = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.proj_out_1 = nn.Linear(dim, 2 * dim)
        self.proj_out_2 = nn.Linear(dim, cfg.dit_output_dim)

    def condition(self, context: torch.Tensor, buckets: torch.Tensor) -> DiTCondition:
        """context (B, S, C), buckets (steps, B) -> the blocks' context keys/values and per-step modulation."""
        steps, batch = buckets.shape
        temb = self.timestep_encoder(buckets.reshape(-1)).view(steps, batch, -1)  # (steps, B, D)
        blocks = self.transformer_blocks
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=-1)  # note: (shift, scale) order here
        return DiTCondition(
            context_kv=[block.attn1.project_context(context) if block.cross else None for block in blocks],
            modulation=[block.norm1.modulation(temb) for block in blocks],
            out_modulation=(shift, scale),
        )

    def forward(self, tokens: torch.Tensor, condition: DiTCondition, step: int = 0) -> torch.Tensor:
        # tokens (B, 49, D) -> (B, 49, out), at integration step ``step`` of ``condition``
        for block, (scale, shift), kv in zip(self.transformer_blocks, condition.modulation, condition.context_kv):
            tokens = block(tokens, scale[step], shift[step], kv)
        shift, scale = (t[step] for t in condition.out_modulation)  # (B, D) each
        tokens = self.norm_out(tokens) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
        return self.proj_out_2(tokens)


class FlowMatchingActionHead(nn.Module):
    def __init__(self, cfg: ActionHeadConfig):
        super().__init__()
        self.cfg = cfg
        width, cats = cfg.input_embedding_dim, cfg.max_num_embodiments
        self.vlln = nn.LayerNorm(cfg.backbone_embedding_dim, eps=1e-5) if cfg.use_vlln else nn.Identity()
        self.vl_self_attention = SelfAttentionTransformer(
            cfg.backbone_embedding_dim, cfg.vlsa_heads, cfg.vlsa_head_dim, cfg.vlsa_layers
        )
        self.state_encoder = CategorySpecificMLP(cats, cfg.max_state_dim, cfg.hidden_size, width)
        self.action_encoder = MultiEmbodimentActionEncoder(cfg.action_dim, width, cats)
        self.action_decoder = CategorySpecificMLP(cats, cfg.hidden_size, cfg.hidden_size, cfg.action_dim)
        self.future_tokens = nn.Embedding(cfg.num_target_vision_tokens, width)
        self.position_embedding = nn.Embedding(cfg.max_seq_len, width)
        self.model = DiT(cfg)

    def encode_context(self, features: torch.Tensor) -> torch.Tensor:
        return self.vl_self_attention(self.vlln(features))  # (B, L, C)

    def velocity(self, actions, bucket, condition, state_tokens, embodiment_id, step: int = 0) -> torch.Tensor:
        """The DiT's predicted velocity for noisy ``actions`` (B, H, A) at integer ``bucket`` (B,), which is
        step ``step`` of ``condition`` (``DiT.condition``)."""
        horizon = actions.shape[1]
        action_tokens = self.action_encoder(actions, bucket, embodiment_id)  # (B, H, W)
        if self.cfg.add_pos_embed:
            action_tokens = action_tokens + self.position_embedding.weight[:horizon].unsqueeze(0)
        future = self.future_tokens.weight.unsqueeze(0).expand(actions.shape[0], -1, -1)  # (B, 32, W)
        tokens = torch.cat([state_tokens, future, action_tokens], dim=1)  # (B, 1 + 32 + H, W)
        out = self.model(tokens, condition, step)  # (B, 49, hidden)
        return self.action_decoder(out, embodiment_id)[:, -horizon:]  # (B, H, A)

    @torch.no_grad()
    def get_action(
        self,
        features: torch.Tensor,  # (B, L, C) backbone features
        state: torch.Tensor,  # (B, 1, max_state_dim), normalised and zero-padded
        embodiment_id: torch.Tensor,  # (B,) int64
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,  # (B, action_horizon, action_dim) starting noise; drawn if None
    ) -> torch.Tensor:
        """Euler integration of the flow from Gaussian noise: (B, action_horizon, action_dim), normalised."""
        cfg = self.cfg
        context = self.encode_context(features)
        embodiment = select_embodiments(self, embodiment_id)  # the embodiment-specific weights, once
        state_tokens = self.state_encoder(state.to(context.dtype), embodiment)  # (B, 1, W)
        batch = features.shape[0]
        if noise is None:
            noise = torch.randn((batch, cfg.action_horizon, cfg.action_dim), generator=generator,
                                device=generator.device if generator is not None else features.device)  # fmt: skip
        actions = noise.to(device=features.device, dtype=context.dtype)
        steps = cfg.num_inference_timesteps
        starts = [int(k / steps * cfg.num_timestep_buckets) for k in range(steps)]  # 0, 250, 500, 750
        buckets = torch.stack([torch.full((batch,), s, device=features.device) for s in starts])  # (steps, B)
        condition = self.model.condition(context, buckets)  # once for all steps
        for k in range(steps):
            velocity = self.velocity(actions, buckets[k], condition, state_tokens, embodiment, step=k)
            actions = actions + velocity / steps
        return actions


def flow_matching_loss(
    head: FlowMatchingActionHead,
    features: torch.Tensor,  # (B, L, C)
    state: torch.Tensor,  # (B, 1, S)
    actions: torch.Tensor,  # (B, H, A) normalised targets
    action_mask: torch.Tensor,  # (B, H, A) 1 where the action dimension is real
    embodiment_id: torch.Tensor,  # (B,)
) -> torch.Tensor:
    """The N1.5 training loss: t = (s - u) / s with u ~ Beta(1.5, 1), x_t = (1 - t) noise + t actions,
    target velocity actions - noise, masked MSE over real action dimensions."""
    cfg = head.cfg
    beta = torch.distributions.Beta(cfg.noise_beta_alpha, cfg.noise_beta_beta)
    u = beta.sample((actions.shape[0],)).to(actions.device)
    t = ((cfg.noise_s - u) / cfg.noise_s).to(actions.dtype)  # (B,)
    noise = torch.randn_like(actions)
    noisy = (1 - t[:, None, None]) * noise + t[:, None, None] * actions
    bucket = (t * cfg.num_timestep_buckets).long()
    context = head.encode_context(features)
    state_tokens = head.state_encoder(state.to(context.dtype), embodiment_id)
    condition = head.model.condition(context, bucket.unsqueeze(0))  # one step: (1, B) buckets
    predicted = head.velocity(noisy, bucket, condition, state_tokens, embodiment_id)
    error = (predicted - (actions - noise)) ** 2 * action_mask
    return error.sum() / action_mask.sum().clamp(min=1)
