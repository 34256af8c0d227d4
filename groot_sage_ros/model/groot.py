"""The top-level GR00T N1.5 module: ``backbone`` (+ ``action_head`` in a later issue), checkpoint keys."""

from __future__ import annotations

from torch import nn

from ..config import GrootConfig
from .backbone import EagleBackbone


class GrootN15(nn.Module):
    """Mirrors ``GR00T_N1_5``'s children so state-dict keys equal the checkpoint's."""

    def __init__(self, cfg: GrootConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = EagleBackbone(cfg.backbone)
