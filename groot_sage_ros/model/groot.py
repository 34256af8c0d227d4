"""The top-level GR00T N1.5 module: ``backbone`` and, when asked for, ``action_head``; checkpoint keys."""

from __future__ import annotations

from torch import nn

from ..config import GrootConfig
from .action_head import FlowMatchingActionHead
from .backbone import EagleBackbone


class GrootN15(nn.Module):
    """Mirrors ``GR00T_N1_5``'s children so state-dict keys equal the checkpoint's.

    Without ``with_action_head`` the head is not built, so its weights are never read or materialised.
    """

    def __init__(self, cfg: GrootConfig, with_action_head: bool = False):
        super().__init__()
        self.cfg = cfg
        self.backbone = EagleBackbone(cfg.backbone)
        if with_action_head:
            self.action_head = FlowMatchingActionHead(cfg.action_head)
