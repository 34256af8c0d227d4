"""Find, check and load GR00T N1.5 checkpoints (Hugging Face layout, safetensors, never downloads).

Layout::

    config.json                        GR00T_N1_5 schema
    model.safetensors                  or model-0000k-of-0000n.safetensors + model.safetensors.index.json
    experiment_cfg/metadata.json       normalisation statistics per embodiment (action head)

Loading builds the module on the meta device, checks every key and shape against the safetensors
headers before reading any data, then reads one tensor at a time from the memory-mapped files and
assigns it in place, so peak host memory stays near one copy of the weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .config import GrootConfig, parse_dtype

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# Present in some checkpoints, absent in others; never needed: the tied LM head (we compute no logits)
# and SigLIP's attention-pooling head (its output is discarded by Eagle).
OPTIONAL_KEYS = ("backbone.eagle_model.language_model.lm_head.weight",)
OPTIONAL_PREFIXES = ("backbone.eagle_model.vision_model.vision_model.head.",)
EMBED_KEY = "backbone.eagle_model.language_model.model.embed_tokens.weight"
# Top-level children of GR00T_N1_5; keys of a child that is not built are skipped, never read.
CHILDREN = ("backbone.", "action_head.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file or key and what was expected."""


@dataclass
class CheckpointFiles:
    root: Path
    config: GrootConfig
    weight_map: dict[str, Path]  # tensor name -> shard file

    @property
    def shards(self) -> list[Path]:
        return sorted(set(self.weight_map.values()))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, honouring HF_HUB_CACHE and HF_HOME as huggingface_hub does."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A local directory, or a repo id (``owner/name``) already in the local HF cache. Never downloads."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    text = str(spec)
    parts = text.split("/")
    if len(parts) != 2 or not all(parts) or text.startswith((".", "/", "~")):
        raise CheckpointError(f"checkpoint {text!r}: no such directory (expected a checkpoint folder or a repo id)")
    repo_dir = hf_cache_dir() / f"models--{parts[0]}--{parts[1]}"
    snapshot = _cached_snapshot(repo_dir)
    if snapshot is None:
        raise CheckpointError(
            f"checkpoint {text!r} is not a local directory and is not in the Hugging Face cache "
            f"(looked in {repo_dir}; set HF_HUB_CACHE or HF_HOME to use another cache). Nothing is "
            f"downloaded at run time: on a machine with network run `hf download {text}` "
            f"(or `huggingface-cli download {text}`) and copy the cache, or pass the folder's path."
        )
    return snapshot


def _cached_snapshot(repo_dir: Path) -> Path | None:
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snapshot = repo_dir / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted((repo_dir / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def read_checkpoint_files(spec: str | os.PathLike) -> CheckpointFiles:
    root = resolve_checkpoint(spec)
    config_path = root / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{root}: no config.json (expected a GR00T N1.5 checkpoint folder)")
    config = GrootConfig.from_file(config_path)
    index_path = root / INDEX_FILE
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{index_path}: not a safetensors index with a weight_map ({err})") from None
        weight_map = {name: root / shard for name, shard in index.items()}
    elif (root / SINGLE_FILE).is_file():
        with _open_shard(root / SINGLE_FILE) as handle:
            weight_map = {name: root / SINGLE_FILE for name in handle.keys()}
    else:
        raise CheckpointError(f"{root}: no {INDEX_FILE} and no {SINGLE_FILE}")
    for shard in set(weight_map.values()):
        if not shard.is_file():
            raise CheckpointError(f"{index_path}: lists shard {shard.name}, which does not exist in {root}")
    return CheckpointFiles(root=root, config=config, weight_map=weight_map)


def _open_shard(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors file, truncated or corrupt? ({err})") from None


def _is_optional(name: str) -> bool:
    return name in OPTIONAL_KEYS or name.startswith(OPTIONAL_PREFIXES)


def by_shard(sources: dict[str, str], files: CheckpointFiles) -> dict[Path, list[str]]:
    """Module keys grouped by the shard file that holds their source tensor (each shard opened once)."""
    groups: dict[Path, list[str]] = {}
    for name, source in sources.items():
        groups.setdefault(files.weight_map[source], []).append(name)
    return groups


def plan_load(module: nn.Module, files: CheckpointFiles) -> dict[str, str]:
    """Map each module key to the checkpoint tensor that fills it; raise naming every mismatch."""
    expected = module.state_dict()
    built = tuple(prefix for prefix in CHILDREN if any(k.startswith(prefix) for k in expected))
    # Keys of children that are not built are skipped; keys outside every known child are unexpected.
    available = {k for k in files.weight_map if k.startswith(built) or not k.startswith(CHILDREN)}
    sources = {name: name for name in expected if name in available}
    lm_head = OPTIONAL_KEYS[0]
    if EMBED_KEY in expected and EMBED_KEY not in available and lm_head in available:
        sources[EMBED_KEY] = lm_head  # tied embeddings stored only as lm_head
    missing = sorted(set(expected) - set(sources))
    unexpected = sorted(k for k in available - set(expected) - set(sources.values()) if not _is_optional(k))
    if missing or unexpected:
        lines = [f"checkpoint {files.root} does not match the model built from its config.json:"]
        lines += [f"  missing key: {k}" for k in missing]
        lines += [f"  unexpected key: {k}" for k in unexpected]
        raise CheckpointError("\n".join(lines))
    wrong = []
    for shard, names in by_shard(sources, files).items():
        with _open_shard(shard) as handle:
            stored = set(handle.keys())
            for name in names:
                source = sources[name]
                if source not in stored:
                    raise CheckpointError(f"{shard}: the index lists {source} in this shard, but it is not there")
                shape = tuple(handle.get_slice(source).get_shape())
                if shape != tuple(expected[name].shape):
                    wrong.append(f"  {source}: checkpoint {shape}, model {tuple(expected[name].shape)} ({shard.name})")
    if wrong:
        raise CheckpointError(f"checkpoint {files.root}: wrong tensor shapes:\n" + "\n".join(wrong))
    return sources


def load_weights(
    module: nn.Module, files: CheckpointFiles, device: torch.device | str, dtype: torch.dtype | str
) -> None:
    """Fill a meta-device ``module`` from ``files``: one tensor at a time, cast to dtype on device."""
    dtype = parse_dtype(dtype)
    sources = plan_load(module, files)
    for shard, names in sorted(by_shard(sources, files).items()):
        with _open_shard(shard) as handle:
            for name in names:
                try:
                    tensor = handle.get_tensor(sources[name])
                except (SafetensorError, OSError) as err:
                    raise CheckpointError(f"{shard}: cannot read {sources[name]} ({err})") from None
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


def content_hash(files: CheckpointFiles, chunk: int = 1 << 24) -> str:
    """sha256 over config.json and every weight file, in name order: identifies the teacher's weights."""
    import hashlib

    digest = hashlib.sha256()
    for path in [files.root / "config.json", *files.shards]:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()
