"""Write random checkpoints in the real layout (every family's tiny writer uses this): random weights,
safetensors shards and their index."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..owned_files import atomic_file, save_safetensors, write_json_atomic
from .files import INDEX_FILE


@torch.no_grad()
def random_init_(model: torch.nn.Module, seed: int) -> None:
    """N(0, 0.02) matrices and embeddings, unit norm weights, zero biases (deterministic per seed)."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, param in model.named_parameters():
        if param.ndim >= 2:
            param.normal_(0.0, 0.02, generator=generator)
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.fill_(1.0)


def perturb_norms(state: dict[str, torch.Tensor], amount: float, generator: torch.Generator) -> None:
    """In place: ``amount`` x N(0, 1) added to every norm scale (unit after ``random_init_``), so that a tiny
    random checkpoint's norms carry information as trained ones do; nothing when ``amount`` is 0."""
    for name, tensor in state.items():
        if amount and tensor.ndim == 1 and "norm" in name and name.endswith(".weight"):
            tensor.add_(amount * torch.randn(tensor.shape, generator=generator))


def random_state(module_factory, seed: int) -> dict[str, torch.Tensor]:
    """The state dict of ``module_factory()`` (built on meta, materialised on the CPU) with random weights."""
    with torch.device("meta"):
        module = module_factory()
    module.to_empty(device="cpu")
    random_init_(module, seed)
    return module.state_dict()


def write_shards(out: Path, shard_makers: list[Callable[[], dict[str, torch.Tensor]]]) -> None:
    """``model-0000k-of-0000n.safetensors`` per maker's tensors, then ``model.safetensors.index.json``. One
    shard is in memory at a time (a full-size checkpoint is ~7 GB)."""
    weight_map, total = {}, 0
    for number, make in enumerate(shard_makers, start=1):
        shard = make()
        name = f"model-{number:05d}-of-{len(shard_makers):05d}.safetensors"
        with atomic_file(out / name) as tmp:
            save_safetensors(shard, tmp, {"format": "pt"}, out / name)
        total += sum(t.numel() * t.element_size() for t in shard.values())
        weight_map.update(dict.fromkeys(shard, name))
        del shard
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    write_json_atomic(out / INDEX_FILE, index)
