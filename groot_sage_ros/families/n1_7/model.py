"""The top-level GR00T N1.7 module: ``backbone`` and, when asked for, ``action_head``; checkpoint keys."""

from __future__ import annotations

import torch

from ..base import FamilyModel
from .action_head import N17ActionHead
from .backbone import LayerCalls, Qwen3VLBackbone
from .config import GrootN17Config


class GrootN17(FamilyModel):
    """Mirrors LeRobot's ``GR00TN17`` children so state-dict keys equal the checkpoint's; a part not built
    has its weights never read."""

    def __init__(self, cfg: GrootN17Config, with_action_head: bool = False, with_backbone: bool = True):
        super().__init__()
        self.cfg = cfg
        self.has_backbone, self.has_action_head = with_backbone, with_action_head
        if with_backbone:
            self.backbone = Qwen3VLBackbone(cfg.backbone)
        head = cfg.action_head
        self.action_horizon, self.action_dim, self.state_width = (
            head.action_horizon,
            head.max_action_dim,
            head.max_state_dim,
        )
        self.timestep_buckets = head.num_timestep_buckets
        if with_action_head:
            self.action_head = N17ActionHead(head)

    def action_chunk(
        self,
        features,
        token_mask,
        image_mask,
        state,
        embodiment_id,
        noise,
        calls: LayerCalls | None = None,
        strength=None,
        guidance=None,
    ) -> torch.Tensor:
        head = self.action_head
        return head.get_action(features, token_mask, image_mask, state, embodiment_id, noise, calls, strength, guidance)

    def action_velocity(
        self, features, token_mask, image_mask, actions, bucket, state, embodiment_id, calls: LayerCalls | None = None
    ) -> torch.Tensor:
        head = self.action_head
        context = head.encode_context(features, calls)  # (B, L, C)
        state_tokens = head.state_encoder(state.to(context.dtype), embodiment_id)  # (B, 1, W)
        condition = head.model.condition(context, bucket.unsqueeze(0), calls, token_mask, image_mask)  # one step
        return head.velocity(actions.to(context.dtype), bucket, condition, state_tokens, embodiment_id, calls=calls)
