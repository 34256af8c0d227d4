"""The top-level GR00T N1.5 module: ``backbone`` and, when asked for, ``action_head``; checkpoint keys."""

from __future__ import annotations

import torch

from ..base import FamilyModel
from .action_head import FlowMatchingActionHead
from .backbone import EagleBackbone, LayerCalls
from .config import GrootConfig


class GrootN15(FamilyModel):
    """Mirrors ``GR00T_N1_5``'s children so state-dict keys equal the checkpoint's.

    Without ``with_action_head`` the head is not built, so its weights are never read or materialised.
    """

    def __init__(self, cfg: GrootConfig, with_action_head: bool = False, with_backbone: bool = True):
        super().__init__()
        self.cfg = cfg
        self.has_backbone, self.has_action_head = with_backbone, with_action_head
        if with_backbone:  # without it (a student's features feed the head), its weights are never read
            self.backbone = EagleBackbone(cfg.backbone)
        head = cfg.action_head
        self.action_horizon, self.action_dim, self.state_width = (
            head.action_horizon,
            head.action_dim,
            head.max_state_dim,
        )
        self.timestep_buckets = head.num_timestep_buckets
        if with_action_head:
            self.action_head = FlowMatchingActionHead(head)

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
        """N1.5's head attends to every token (the reference ignores the masks)."""
        head = self.action_head
        return head.get_action(
            features, state, embodiment_id, noise=noise, calls=calls, strength=strength, guidance=guidance
        )  # (1, H, A)

    def action_velocity(
        self, features, token_mask, image_mask, actions, bucket, state, embodiment_id, calls: LayerCalls | None = None
    ) -> torch.Tensor:
        """The head's flow velocity (B, H, A) for ``actions`` (B, H, A) at timestep ``bucket`` (B,), from features
        (B, L, D) and normalised states (B, 1, S): one training-time call, differentiable in the features."""
        head = self.action_head
        context = head.encode_context(features, calls)  # (B, L, C)
        state_tokens = head.state_encoder(state.to(context.dtype), embodiment_id)  # (B, 1, W)
        condition = head.model.condition(context, bucket.unsqueeze(0), calls)  # one step: (1, B) buckets
        return head.velocity(actions.to(context.dtype), bucket, condition, state_tokens, embodiment_id, calls=calls)
