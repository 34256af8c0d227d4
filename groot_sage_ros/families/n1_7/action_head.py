"""GR00T N1.7's flow-matching action head, in plain PyTorch with the checkpoint's key names.

LeRobot ``GR00TN17ActionHead`` and ``AlternateVLDiT`` (groot_n1_7.py, action_head/cross_attention_dit.py)::

    features (B, L, 2048) -> vlln -> vl_self_attention (4 blocks)                     = context (B, L, 2048)
    state (B, 1, 132) -> state_encoder                                                 (B, 1, 1536)
    noisy actions (B, 40, 132), bucket -> action_encoder + position_embedding[:40]     (B, 40, 1536)
    [state | actions] (B, 41, 1536) -> DiT (32 blocks) -> action_decoder -> velocity of the last 40 tokens
    Euler: x <- x + v / 4 at buckets 0, 250, 500, 750

Unlike N1.5 there are no future tokens, and the DiT's cross-attention blocks alternate between the
prompt's text tokens (every token that is not an image token: blocks 0, 4, 8, ...) and its image tokens
(blocks 2, 6, 10, ...); odd blocks self-attend. Padding tokens are never attended to. As in N1.5, what does
not change between Euler steps (each cross block's keys and values, the masks, each step's timestep
modulation) is computed once per chunk (``DiT.condition``).
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


class N17ActionHead(nn.Module):
    def __init__(self, cfg: ActionHeadConfig):
        super().__init__()
        self.cfg = cfg
        width, cats = cfg.input_embedding_dim, cfg.max_num_embodiments
        self.vlln = nn.LayerNorm(cfg.backbone_embedding_dim, eps=1e-5) if cfg.use_vlln else nn.Identity()
        self.vl_self_attention = SelfAttentionTransformer(
            cfg.backbone_embedding_dim, cfg.vlsa_heads, cfg.vlsa_head_dim, cfg.vlsa_layers
        )
        self.state_encoder = CategorySpecificMLP(cats, cfg.max_state_dim, cfg.hidden_size, width)
        self.action_encoder = MultiEmbodimentActionEncoder(cfg.max_action_dim, width, cats)
        self.action_decoder = CategorySpecificMLP(cats, cfg.hidden_size, cfg.hidden_size, cfg.max_action_dim)
        if cfg.add_pos_embed:
            self.position_embedding = nn.Embedding(cfg.max_seq_len, width)
        dim, attends = cfg.dit_heads * cfg.dit_head_dim, [cfg.cross_attends(k) for k in range(cfg.dit_layers)]
        self.model = DiT(dim, cfg.dit_heads, cfg.dit_head_dim, cfg.dit_output_dim, cfg.backbone_embedding_dim, attends)

    def encode_context(self, features: torch.Tensor, calls: LayerCalls | None = None) -> torch.Tensor:
        return self.vl_self_attention(self.vlln(features), (calls or {}).get("vl_self_attention"))  # (B, L, C)

    def velocity(
        self, actions, bucket, condition, state_tokens, embodiment, step: int = 0, calls: LayerCalls | None = None
    ) -> torch.Tensor:
        """The DiT's velocity for noisy ``actions`` (B, H, A) at integer ``bucket`` (B,), step ``step`` of
        ``condition``."""
        horizon = actions.shape[1]
        action_tokens = self.action_encoder(actions, bucket, embodiment)  # (B, H, W)
        if self.cfg.add_pos_embed:
            action_tokens = action_tokens + self.position_embedding.weight[:horizon].unsqueeze(0)
        tokens = torch.cat([state_tokens, action_tokens], dim=1)  # (B, 1 + H, W)
        out = self.model(tokens, condition, step, calls)  # (B, 1 + H, hidden)
        return self.action_decoder(out, embodiment)[:, -horizon:]  # (B, H, A)

    @torch.no_grad()
    def get_action(
        self,
        features: torch.Tensor,  # (B, L, C) backbone features
        token_mask: torch.Tensor,  # (B, L) bool: real tokens
        image_mask: torch.Tensor,  # (B, L) bool: image tokens
        state: torch.Tensor,  # (B, 1, max_state_dim), normalised and zero-padded
        embodiment_id: torch.Tensor,  # (B,) int64
        noise: torch.Tensor,  # (B, action_horizon, max_action_dim) starting noise (or RTC's start: flow.py)
        calls: LayerCalls | None = None,
        strength: torch.Tensor | None = None,  # (1, H, 1) velocity scale per step (RTC "prefix")
        guidance: Guidance | None = None,  # RTC "guided": the correction towards the chunk to continue
    ) -> torch.Tensor:
        """Euler integration of the flow from ``noise``: (B, action_horizon, max_action_dim), normalised."""
        cfg = self.cfg
        context = self.encode_context(features, calls)
        embodiment = select_embodiments(self, embodiment_id)  # the embodiment-specific weights, once
        state_tokens = self.state_encoder(state.to(context.dtype), embodiment)  # (B, 1, W)
        actions = noise.to(device=features.device, dtype=context.dtype)
        steps, batch = cfg.num_inference_timesteps, features.shape[0]
        buckets = step_buckets(steps, cfg.num_timestep_buckets, batch, features.device)  # (steps, B)
        condition = self.model.condition(context, buckets, calls, token_mask, image_mask)  # once for all steps

        def velocity(actions: torch.Tensor, k: int) -> torch.Tensor:
            return self.velocity(actions, buckets[k], condition, state_tokens, embodiment, step=k, calls=calls)

        return euler(velocity, actions, steps, strength, guidance)
