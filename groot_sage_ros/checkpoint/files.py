"""Find and read a checkpoint folder's files (Hugging Face layout, safetensors); never downloads.

Layout::

    config.json                        the family's schema (``families.detect`` reads it)
    model.safetensors                  or model-0000k-of-0000n.safetensors + model.safetensors.index.json
    (statistics file)                  normalisation statistics per embodiment, where the family says
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from safetensors import SafetensorError, safe_open

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file or key and what was expected."""


@dataclass
class CheckpointFiles:
    root: Path
    raw_config: dict[str, Any]  # config.json as parsed JSON; the family validates it
    weight_map: dict[str, Path]  # tensor name -> shard file
    # tensor name -> the name it is stored under, for tensors another folder holds (``add_source``)
    stored_names: dict[str, str] = field(default_factory=dict)

    @property
    def shards(self) -> list[Path]:
        return sorted(set(self.weight_map.values()))

    def stored_name(self, name: str) -> str:
        return self.stored_names.get(name, name)

    def add_source(self, spec: str | os.PathLike, rename: Callable[[str], str | None], what: str) -> Path:
        """Take tensors from another folder (``spec``: a folder or a cached repo id) under the names
        ``rename(stored name)`` gives (None: not needed); ``what`` says why, for the error when it is
        missing. Returns the folder."""
        try:
            other = read_checkpoint_files(spec)
        except CheckpointError as err:
            raise CheckpointError(f"{self.root}: {what}, and {err}") from None
        for stored, shard in other.weight_map.items():
            name = rename(stored)
            if name is not None:
                self.weight_map[name] = shard
                self.stored_names[name] = stored
        return other.root


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


def read_raw_config(root: Path) -> dict[str, Any]:
    """``config.json`` as a JSON object; CheckpointError naming the file otherwise."""
    config_path = root / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{root}: no config.json (expected a GR00T checkpoint folder)")
    try:
        raw = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_path}: invalid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    return raw


def read_checkpoint_files(spec: str | os.PathLike, check_config=None) -> CheckpointFiles:
    """The folder's config and weight map. ``check_config(raw, source)`` (the family's parser) runs
    before the weight files are looked at, so a bad config is reported first."""
    root = resolve_checkpoint(spec)
    raw = read_raw_config(root)
    if check_config is not None:
        check_config(raw, str(root / "config.json"))
    index_path = root / INDEX_FILE
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{index_path}: not a safetensors index with a weight_map ({err})") from None
        weight_map = {name: root / shard for name, shard in index.items()}
    elif (root / SINGLE_FILE).is_file():
        with open_shard(root / SINGLE_FILE) as handle:
            weight_map = {name: root / SINGLE_FILE for name in handle.keys()}
    else:
        raise CheckpointError(f"{root}: no {INDEX_FILE} and no {SINGLE_FILE}")
    for shard in set(weight_map.values()):
        if not shard.is_file():
            raise CheckpointError(f"{index_path}: lists shard {shard.name}, which does not exist in {root}")
    return CheckpointFiles(root=root, raw_config=raw, weight_map=weight_map)


def open_shard(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors file, truncated or corrupt? ({err})") from None


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
