"""Load a checkpoint's weights into a module built on the meta device, with the family's key plan.

Loading checks every key and shape against the safetensors headers before reading any data, then reads
one tensor at a time from the memory-mapped files and assigns it in place, so peak host memory stays
near one copy of the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from .files import CheckpointError, CheckpointFiles, open_shard


def _is_optional(name: str, keys) -> bool:
    return name in keys.optional or name.startswith(keys.optional_prefixes)


def by_shard(sources: dict[str, str], files: CheckpointFiles) -> dict[Path, list[str]]:
    """Module keys grouped by the shard file that holds their source tensor (each shard opened once)."""
    groups: dict[Path, list[str]] = {}
    for name, source in sources.items():
        groups.setdefault(files.weight_map[source], []).append(name)
    return groups


def plan_load(module: nn.Module, files: CheckpointFiles, keys) -> dict[str, str]:
    """Map each module key to the checkpoint tensor that fills it (``keys``: the family's
    ``CheckpointKeys``); raise naming every mismatch."""
    expected = module.state_dict()
    built = tuple(prefix for prefix in keys.children if any(k.startswith(prefix) for k in expected))
    # Keys of children that are not built are skipped; keys outside every known child are unexpected.
    available = {k for k in files.weight_map if k.startswith(built) or not k.startswith(keys.children)}
    sources = {name: name for name in expected if name in available}
    for name, stored in keys.aliases.items():
        if name in expected and name not in available and stored in available:
            sources[name] = stored  # e.g. tied embeddings stored only as the LM head
    missing = sorted(set(expected) - set(sources))
    unexpected = sorted(k for k in available - set(expected) - set(sources.values()) if not _is_optional(k, keys))
    if missing or unexpected:
        lines = [f"checkpoint {files.root} does not match the model built from its config.json:"]
        lines += [f"  missing key: {k}" for k in missing]
        lines += [f"  unexpected key: {k}" for k in unexpected]
        raise CheckpointError("\n".join(lines))
    wrong = []
    for shard, names in by_shard(sources, files).items():
        with open_shard(shard) as handle:
            stored = set(handle.keys())
            for name in names:
                source = files.stored_name(sources[name])
                if source not in stored:
                    raise CheckpointError(f"{shard}: the index lists {source} in this shard, but it is not there")
                shape = tuple(handle.get_slice(source).get_shape())
                if shape != tuple(expected[name].shape):
                    wrong.append(f"  {source}: checkpoint {shape}, model {tuple(expected[name].shape)} ({shard.name})")
    if wrong:
        raise CheckpointError(f"checkpoint {files.root}: wrong tensor shapes:\n" + "\n".join(wrong))
    return sources


def load_weights(
    module: nn.Module, files: CheckpointFiles, keys, device: torch.device | str, dtype: torch.dtype
) -> None:
    """Fill a meta-device ``module`` from ``files``: one tensor at a time, cast to dtype on device."""
    sources = plan_load(module, files, keys)
    for shard, names in sorted(by_shard(sources, files).items()):
        with open_shard(shard) as handle:
            for name in names:
                stored = files.stored_name(sources[name])
                try:
                    tensor = handle.get_tensor(stored)
                except (SafetensorError, OSError) as err:
                    raise CheckpointError(f"{shard}: cannot read {stored} ({err})") from None
                target = dtype if tensor.is_floating_point() else tensor.dtype
                _assign(module, name, tensor.to(device=device, dtype=target))
                del tensor


def _assign(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner_path, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_path)
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[leaf] = tensor


def meta_tensors(module: nn.Module) -> list[str]:
    """Names of parameters and buffers still without storage (a loading bug if any remain)."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    return [name for name, t in tensors if t.is_meta]
