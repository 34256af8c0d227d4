"""GR00T N1.5's flow-matching action head, in plain PyTorch with the checkpoint's key names.

    features (B, L, 2048) -> vlln -> vl_self_attention (4 blocks)                    = context (B, L, 2048)
    state (B, 1, 64) -> state_encoder                                                 (B, 1, 1536)
    noisy actions (B, 16, 32), bucket -> action_encoder + position_embedding[:16]     (B, 16, 1536)
    [state | future_tokens (32) | actions] (B, 49, 1536) -> DiT(context, bucket) -> action_decoder
    -> velocity of the last 16 tokens; Euler: x <- x + v / N for N buckets 0, 250, 500, 750

What does not change between the Euler steps (the context's keys and values in every cross-attention
block, each step's timestep modulation) is computed once per chunk (``DiT.condition``).

DiT blocks alternate: even blocks cross-attend to the context, odd blocks self-attend; each starts with a
timestep-conditioned LayerNorm, as Isaac-GR00T's ``flow_matching_action_head`` has them; no diffusers
dependency.

As in the backbone, the loops over repeated blocks take optional per-block callables (``LayerCalls``:
"vl_self_attention", "context_kv" for the cross blocks, "dit"); without them the modules run as built.
"""

from __future__ import annotations

import torch
from torch import nn

from ..common.flow import Guidance, euler, step_buckets
from ..common.head_blocks import (
    CategorySpecificMLP,
    DiT,
    MultiEmbodimentActionEncoder,
    SelfAttentionTransformer,
    select_embodiments,
)
from .backbone import LayerCalls
from .config import ActionHeadConfig


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
        dim, attends = cfg.dit_heads * cfg.dit_head_dim, ["all" if i % 2 == 0 else None for i in range(cfg.dit_layers)]
        self.model = DiT(dim, cfg.dit_heads, cfg.dit_head_dim, cfg.dit_output_dim, cfg.dit_cross_attention_dim, attends)

    def encode_context(self, features: torch.Tensor, calls: LayerCalls | None = None) -> torch.Tensor:
        return self.vl_self_attention(self.vlln(features), (calls or {}).get("vl_self_attention"))  # (B, L, C)

    def velocity(
        self, actions, bucket, condition, state_tokens, embodiment_id, step: int = 0, calls: LayerCalls | None = None
    ) -> torch.Tensor:
        """The DiT's predicted velocity for noisy ``actions`` (B, H, A) at integer ``bucket`` (B,), which is
        step ``step`` of ``condition`` (``DiT.condition``)."""
        horizon = actions.shape[1]
        action_tokens = self.action_encoder(actions, bucket, embodiment_id)  # (B, H, W)
        if self.cfg.add_pos_embed:
            action_tokens = action_tokens + self.position_embedding.weight[:horizon].unsqueeze(0)
        future = self.future_tokens.weight.unsqueeze(0).expand(actions.shape[0], -1, -1)  # (B, 32, W)
        tokens = torch.cat([state_tokens, future, action_tokens], dim=1)  # (B, 1 + 32 + H, W)
        out = self.model(tokens, condition, step, calls)  # (B, 49, hidden)
        return self.action_decoder(out, embodiment_id)[:, -horizon:]  # (B, H, A)

    @torch.no_grad()
    def get_action(
        self,
        features: torch.Tensor,  # (B, L, C) backbone features
        state: torch.Tensor,  # (B, 1, max_state_dim), normalised and zero-padded
        embodiment_id: torch.Tensor,  # (B,) int64
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,  # (B, action_horizon, action_dim) starting noise; drawn if None
        calls: LayerCalls | None = None,  # per-block callables (the fast path); None: the modules as built
        strength: torch.Tensor | None = None,  # (1, H, 1) velocity scale per step (RTC "prefix": flow.py)
        guidance: Guidance | None = None,  # RTC "guided": the correction towards the chunk to continue
    ) -> torch.Tensor:
        """Euler integration of the flow from Gaussian noise (or ``noise`` as given: RTC's start):
        (B, action_horizon, action_dim), normalised."""
        cfg = self.cfg
        context = self.encode_context(features, calls)
        embodiment = select_embodiments(self, embodiment_id)  # the embodiment-specific weights, once
        state_tokens = self.state_encoder(state.to(context.dtype), embodiment)  # (B, 1, W)
        batch = features.shape[0]
        if noise is None:
            noise = torch.randn(
                (batch, cfg.action_horizon, cfg.action_dim),
                generator=generator,
                device=generator.device if generator is not None else features.device,
            )
        actions = noise.to(device=features.device, dtype=context.dtype)
        steps = cfg.num_inference_timesteps
        buckets = step_buckets(steps, cfg.num_timestep_buckets, batch, features.device)  # (steps, B)
        condition = self.model.condition(context, buckets, calls)  # once for all steps

        def velocity(actions: torch.Tensor, k: int) -> torch.Tensor:
            return self.velocity(actions, buckets[k], condition, state_tokens, embodiment, step=k, calls=calls)

        return euler(velocity, actions, steps, strength, guidance)


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
