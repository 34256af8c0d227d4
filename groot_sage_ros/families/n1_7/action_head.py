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
import torch.nn.functional as F
from torch import nn

from ...api import ChunkPrefix
from ..common.flow import euler
from ..common.head_blocks import (
    CategorySpecificMLP,
    DiTBlock,
    DiTCondition,
    MultiEmbodimentActionEncoder,
    SelfAttentionTransformer,
    TimestepEncoder,
    select_embodiments,
)
from .backbone import LayerCalls
from .config import ActionHeadConfig


class DiT(nn.Module):
    def __init__(self, cfg: ActionHeadConfig):
        super().__init__()
        dim = cfg.dit_heads * cfg.dit_head_dim
        self.attends = [cfg.cross_attends(block) for block in range(cfg.dit_layers)]  # "text", "image", "all", None
        self.timestep_encoder = TimestepEncoder(dim)
        self.transformer_blocks = nn.ModuleList(
            [
                DiTBlock(dim, cfg.dit_heads, cfg.dit_head_dim, cfg.backbone_embedding_dim if kind else None)
                for kind in self.attends
            ]
        )
        self.norm_out = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.proj_out_1 = nn.Linear(dim, 2 * dim)
        self.proj_out_2 = nn.Linear(dim, cfg.dit_output_dim)

    def cross_blocks(self) -> list[DiTBlock]:
        return [block for block in self.transformer_blocks if block.cross]

    def condition(
        self,
        context: torch.Tensor,  # (B, S, C)
        token_mask: torch.Tensor,  # (B, S) bool: real tokens (not padding)
        image_mask: torch.Tensor,  # (B, S) bool: image tokens
        buckets: torch.Tensor,  # (steps, B)
        calls: LayerCalls | None = None,
    ) -> DiTCondition:
        """The cross blocks' context keys/values and masks, and every step's modulation, once per chunk."""
        steps, batch = buckets.shape
        temb = self.timestep_encoder(buckets.reshape(-1)).view(steps, batch, -1)  # (steps, B, D)
        project = (calls or {}).get("context_kv") or [block.attn1.project_context for block in self.cross_blocks()]
        projections = iter(project)
        masks = {
            "text": (~image_mask & token_mask)[:, None, None, :],  # (B, 1, 1, S)
            "image": (image_mask & token_mask)[:, None, None, :],
            "all": token_mask[:, None, None, :],
        }
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=-1)  # (shift, scale) order here
        return DiTCondition(
            context_kv=[next(projections)(context) if block.cross else None for block in self.transformer_blocks],
            modulation=[block.norm1.modulation(temb) for block in self.transformer_blocks],
            out_modulation=(shift, scale),
            masks=[masks[kind] if kind else None for kind in self.attends],
        )

    def forward(
        self, tokens: torch.Tensor, condition: DiTCondition, step: int = 0, calls: LayerCalls | None = None
    ) -> torch.Tensor:
        # tokens (B, 41, D) -> (B, 41, out), at integration step ``step`` of ``condition``
        block_calls = (calls or {}).get("dit") or self.transformer_blocks
        for call, (scale, shift), kv, mask in zip(
            block_calls, condition.modulation, condition.context_kv, condition.masks
        ):
            tokens = call(tokens, scale[step], shift[step], kv, mask)
        shift, scale = (t[step] for t in condition.out_modulation)  # (B, D) each
        tokens = self.norm_out(tokens) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
        return self.proj_out_2(tokens)


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
        self.model = DiT(cfg)

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
        prefix: ChunkPrefix | None = None,  # RTC "guided": the chunk to continue
    ) -> torch.Tensor:
        """Euler integration of the flow from ``noise``: (B, action_horizon, max_action_dim), normalised."""
        cfg = self.cfg
        context = self.encode_context(features, calls)
        embodiment = select_embodiments(self, embodiment_id)  # the embodiment-specific weights, once
        state_tokens = self.state_encoder(state.to(context.dtype), embodiment)  # (B, 1, W)
        actions = noise.to(device=features.device, dtype=context.dtype)
        steps, batch = cfg.num_inference_timesteps, features.shape[0]
        starts = [int(k / steps * cfg.num_timestep_buckets) for k in range(steps)]  # 0, 250, 500, 750
        buckets = torch.stack([torch.full((batch,), s, device=features.device) for s in starts])  # (steps, B)
        condition = self.model.condition(context, token_mask, image_mask, buckets, calls)  # once for all steps

        def velocity(actions: torch.Tensor, k: int) -> torch.Tensor:
            return self.velocity(actions, buckets[k], condition, state_tokens, embodiment, step=k, calls=calls)

        return euler(velocity, actions, steps, strength, prefix)
