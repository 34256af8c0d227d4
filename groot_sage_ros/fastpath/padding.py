"""Padding that lets a handful of CUDA graphs serve every prompt length and batch size."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_bucket(input_ids: torch.Tensor, bucket: int, pad_id: int) -> torch.Tensor:
    """(B, L) ids right-padded with ``pad_id`` to (B, ceil(L / bucket) * bucket); exact for a causal LM."""
    length = input_ids.shape[1]
    return F.pad(input_ids, (0, -length % bucket), value=pad_id)


def pad_batch(input_ids: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat the last sample up to the next power-of-two batch, so a handful of graphs serve every batch
    size (rows never interact, so the real rows' features are unchanged)."""
    rows = input_ids.shape[0]
    target = 1 << (rows - 1).bit_length()
    if target == rows:
        return input_ids, images
    cameras = images.shape[0] // rows
    extra = target - rows
    input_ids = torch.cat([input_ids, input_ids[-1:].expand(extra, -1)])  # (target, L)
    images = torch.cat([images, images[-cameras:].repeat(extra, 1, 1, 1)])  # (target * cameras, 3, H, W)
    return input_ids, images
