"""Writing image embeddings into a prompt's image-token positions (teacher backbones and the student)."""

from __future__ import annotations

import torch


def scatter_image_embeddings(
    embeds: torch.Tensor,  # (B, L, D)
    image_embeds: torch.Tensor,  # (N, T, D)
    image_mask: torch.Tensor,  # (B, L) bool, N*T True entries
) -> torch.Tensor:
    """Write image embeddings, in order, into the image-token positions of the flattened batch.

    Same result as Eagle's ``embeds[mask] = image_embeds`` but with static shapes and no host sync:
    the k-th True position (row-major over B*L) takes the k-th image token.
    """
    batch, length, dim = embeds.shape
    flat_mask = image_mask.reshape(-1)  # (B*L,)
    flat_images = image_embeds.reshape(-1, dim)  # (N*T, D)
    index = (torch.cumsum(flat_mask.to(torch.int64), 0) - 1).clamp_(min=0)  # (B*L,)
    gathered = flat_images.index_select(0, index.clamp_(max=flat_images.shape[0] - 1))  # (B*L, D)
    out = torch.where(flat_mask.unsqueeze(-1), gathered, embeds.reshape(-1, dim))
    return out.view(batch, length, dim)
