"""The student's training data: the held-out split, the teacher statistics, batches.

The held-out split is by ARC task (``frame_id`` ``arc/<task>/<pair>``) or else by source bag, never by
frame. The batch order is a function of (seed, step), so a resumed run continues the same loss curve, and
under torchrun each rank takes a slice of every global batch.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from .dataset import FeatureDataset, pad_rows
from .distributed import gather_json

LOADER_THREADS = 4  # read and collate the next batches while the device trains on this one


def group_of(source: dict) -> str:
    """The unit of the held-out split: the ARC task, else the source bag."""
    frame_id = source.get("frame_id", "")
    return "/".join(frame_id.split("/")[:2]) if frame_id.startswith("arc/") else f"bag:{source['bag']}"


def split(dataset: FeatureDataset, eval_fraction: float, seed: int) -> tuple[list[int], list[int], list[str]]:
    """(train indices, held-out indices, held-out groups); refuses an empty side."""
    groups = [group_of(dataset.source(i)) for i in range(len(dataset))]
    unique = sorted(set(groups))
    random.Random(seed).shuffle(unique)
    held = set(unique[: max(1, round(eval_fraction * len(unique)))]) if eval_fraction > 0 else set()
    train = [i for i, g in enumerate(groups) if g not in held]
    held_out = [i for i, g in enumerate(groups) if g in held]
    if not train or (eval_fraction > 0 and not held_out):
        raise ValueError(
            f"empty split: {len(unique)} groups ({unique[:5]}...) give {len(train)} training and "
            f"{len(held_out)} held-out samples; add data or change --eval-fraction"
        )
    return train, held_out, sorted(held)


def training_stats(
    dataset: FeatureDataset, indices: list[int], rank: int = 0, world: int = 1, device: torch.device | str = "cpu"
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """One pass over ``indices``, shared by the ranks (each reads every world-th sample, the sums are
    all-reduced): the token ids they use (sorted), and the per-dimension mean and std of the teacher features
    over their real tokens."""
    dim = dataset.feature_dim
    sums = torch.zeros(2 * dim + 1, dtype=torch.float64, device=device)  # sum, sum of squares, token count
    vocab: set[int] = set()
    for i in indices[rank::world]:
        sample = dataset[i]
        vocab.update(sample["input_ids"].tolist())
        features = sample["features"].to(device).double()  # (L, D), summed on the device
        sums[:dim] += features.sum(0)
        sums[dim : 2 * dim] += (features**2).sum(0)
        sums[-1] += features.shape[0]
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(sums)
        vocab = {v for ids in gather_json(sorted(vocab), world, device) for v in ids}
    sums = sums.cpu()
    mean = sums[:dim] / sums[-1]
    std = (sums[dim : 2 * dim] / sums[-1] - mean**2).clamp(min=0).sqrt().clamp(min=1e-6)
    return sorted(vocab), mean.float(), std.float()


def collate(samples: list[dict], pad_id: int) -> dict:
    """Right-padded batch: ids (B, L) padded with ``pad_id``, features (B, L, D) float16 as stored (half the
    bytes to move; cast on the device), mask (B, L), frames (B*C, 3, S, S) uint8; the teacher's attention
    (B, L, T) float16 where the dataset holds it."""
    length = max(s["input_ids"].shape[0] for s in samples)
    dim = samples[0]["features"].shape[1]
    ids = torch.full((len(samples), length), pad_id, dtype=torch.int64)
    features = torch.zeros((len(samples), length, dim), dtype=torch.float16)
    mask = torch.zeros((len(samples), length), dtype=torch.bool)
    for row, sample in enumerate(samples):
        n = sample["input_ids"].shape[0]
        ids[row, :n], features[row, :n], mask[row, :n] = sample["input_ids"], sample["features"], True
    frames = torch.cat([s["images"] for s in samples])
    batch = {
        "input_ids": ids,
        "features": features,
        "mask": mask,
        "frames": frames,
        "sources": [s["source"] for s in samples],
    }
    if "attention" in samples[0]:  # extract --attention: (B, L, T) float16, zero past each sample's end
        batch["attention"] = pad_rows([s["attention"] for s in samples], length, torch.float16)
    return batch


TENSORS = ("input_ids", "features", "mask", "frames", "attention")  # a batch's tensors (attention: optional)


def pin(batch: dict) -> dict:
    """The batch's tensors in pinned host memory (on a loader thread): the step's copies to the GPU then
    run without waiting for the work queued before them."""
    return {key: value.pin_memory() if key in TENSORS else value for key, value in batch.items()}


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device``, each copied once (asynchronously from pinned memory)."""
    return {key: value.to(device, non_blocking=True) if key in TENSORS else value for key, value in batch.items()}


def batch_indices(train: list[int], step: int, batch: int, seed: int) -> list[int]:
    """The global batch of ``step``: epochs are seeded permutations of the training indices."""
    per_epoch = max(1, len(train) // batch)
    epoch, within = divmod(step, per_epoch)
    order = np.random.default_rng(seed + epoch).permutation(len(train))
    return [train[j] for j in order[within * batch : (within + 1) * batch]] or [train[order[0]]]
