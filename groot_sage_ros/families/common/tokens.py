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


def right_pad(encoded, images: torch.Tensor, pad_id: int, device: torch.device | str = "cpu"):
    """Prompts (ids, layout) padded on the right with ``pad_id`` into one batch, paired with their
    preprocessed uint8 images: the ``collate`` of every family's processor."""
    import numpy as np

    from ...api import ModelInputs
    from .images import to_device

    lengths = [len(ids) for ids, _ in encoded]
    length = max(lengths)
    padded = np.full((len(encoded), length), pad_id, dtype=np.int64)
    for row, (ids, _) in enumerate(encoded):
        padded[row, : len(ids)] = ids  # numpy takes a tuple of ints about 8x faster than torch.tensor
    input_ids = torch.from_numpy(padded)  # (B, L)
    attention_mask = (torch.arange(length) < torch.tensor(lengths)[:, None]).long()  # (B, L)
    expected = sum(len(layout.image_ranges) for _, layout in encoded)
    if images.shape[0] != expected:
        raise ValueError(f"{images.shape[0]} images for prompts that hold {expected} image slots")
    return ModelInputs(
        input_ids=to_device(input_ids, device),
        attention_mask=to_device(attention_mask, device),
        images=images,
        layouts=[layout for _, layout in encoded],
    )


def image_runs(ids, image_token_id: int, num_images: int, tokens_per_image: int) -> list[tuple[int, int]]:
    """[start, end) of each run of ``image_token_id`` in a prompt's ids; ValueError unless there are
    ``num_images`` runs of ``tokens_per_image`` each."""
    runs, start = [], None
    for i, token in enumerate(list(ids) + [-1]):
        if token == image_token_id and start is None:
            start = i
        elif token != image_token_id and start is not None:
            runs.append((start, i))
            start = None
    if len(runs) != num_images or any(end - begin != tokens_per_image for begin, end in runs):
        raise ValueError(f"prompt has image runs {runs}, expected {num_images} of {tokens_per_image} tokens")
    return runs
