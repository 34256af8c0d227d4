"""Teacher-feature datasets: safetensors shards plus ``manifest.json``, read back as a torch Dataset.

Layout of a dataset folder::

    manifest.json            schema_version, num_samples, skipped counts, teacher (checkpoint, content hash,
                             feature_dim, dtype), cameras, source bags, shard list; written last
    shard-00000.safetensors  images (N, C, 3, 224, 224) uint8, input_ids (N, Lmax) int32 (right padded),
                             lengths (N,) int32, features (N, Lmax, D) float16 (zero padded), stamps (N,)
                             int64, index (N,) int64; metadata "samples" (JSON: layout, bag, topics,
                             frame_id, instruction per row) and "skipped" (JSON counts of this shard)

A shard is written to a temporary name and renamed, so a shard file that exists is complete.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..processor import PAD_TOKEN_ID, TokenLayout

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


@dataclass
class Sample:
    index: int  # position in the input stream of frame sets
    images: torch.Tensor  # (C, 3, 224, 224) uint8, the processor's frames
    input_ids: Sequence[int]  # the prompt's ids (the processor's cached tuple, shared, not copied)
    layout: TokenLayout
    features: torch.Tensor  # (L, D) float16
    stamp_ns: int
    source: dict  # bag, topics, frame_id, instruction


def write_shard(path: Path, samples: list[Sample], skipped: Counter, feature_dim: int) -> None:
    """All samples of one shard, atomically (temporary file, then rename)."""
    n = len(samples)
    length = max((len(s.input_ids) for s in samples), default=0)
    cameras = samples[0].images.shape[0] if samples else 0
    image_size = samples[0].images.shape[-1] if samples else 0
    input_ids = np.full((n, length), PAD_TOKEN_ID, dtype=np.int32)  # numpy takes tuples of ints fast
    features = torch.empty((n, length, feature_dim), dtype=torch.float16)  # one pass over fresh memory, not two
    for row, sample in enumerate(samples):
        input_ids[row, : len(sample.input_ids)] = sample.input_ids
        tokens = sample.features.shape[0]
        features[row, :tokens] = sample.features  # cast to float16 by the copy
        features[row, tokens:] = 0
    tensors = {
        "images": torch.stack([s.images for s in samples]) if samples else torch.zeros((0, cameras, 3, image_size, image_size), dtype=torch.uint8),
        "input_ids": torch.from_numpy(input_ids),
        "lengths": torch.tensor([len(s.input_ids) for s in samples], dtype=torch.int32),
        "features": features,
        "stamps": torch.tensor([s.stamp_ns for s in samples], dtype=torch.int64),
        "index": torch.tensor([s.index for s in samples], dtype=torch.int64),
    }  # fmt: skip
    rows = [{"layout": s.layout.to_dict(), **s.source} for s in samples]
    metadata = {"samples": json.dumps(rows), "skipped": json.dumps(dict(skipped))}
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_shard_info(path: Path) -> tuple[int, dict]:
    """(number of samples, skipped counts) of a shard, from its header only."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        return handle.get_slice("index").get_shape()[0], json.loads(metadata.get("skipped", "{}"))


class FeatureDataset(torch.utils.data.Dataset):
    """Samples of a finished dataset, read lazily from memory-mapped shards.

    ``dataset[i]`` -> dict with ``images`` (C, 3, 224, 224) uint8, ``input_ids`` (L,) int64, ``features``
    (L, D) float16, ``layout`` (TokenLayout) and ``source`` (bag, topics, frame_id, instruction, stamp).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.is_file():
            raise ValueError(f"{self.root}: no {MANIFEST}; not a finished dataset (an interrupted extract "
                             "resumes when run again with the same arguments)")  # fmt: skip
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"{manifest_path}: schema_version {self.manifest.get('schema_version')}, "
                             f"expected {SCHEMA_VERSION}")  # fmt: skip
        self.rows: list[tuple[int, int]] = []
        for k, shard in enumerate(self.manifest["shards"]):
            path = self.root / shard["file"]
            if not path.is_file():
                raise ValueError(f"{self.root}: manifest lists {shard['file']}, which is missing")
            count, _ = read_shard_info(path)
            if count != shard["num_samples"]:
                raise ValueError(f"{path}: holds {count} samples, the manifest says {shard['num_samples']}")
            self.rows += [(k, row) for row in range(count)]
        if len(self.rows) != self.manifest["num_samples"]:
            raise ValueError(f"{manifest_path}: num_samples {self.manifest['num_samples']} but the shards hold "
                             f"{len(self.rows)}")  # fmt: skip
        self._handles: dict[int, object] = {}
        self._rows_meta: dict[int, list[dict]] = {}

    @property
    def feature_dim(self) -> int:
        return int(self.manifest["teacher"]["feature_dim"])

    def __len__(self) -> int:
        return len(self.rows)

    def source(self, i: int) -> dict:
        """Where sample ``i`` came from (bag, topics, frame_id, instruction), without reading tensors."""
        k, row = self.rows[i]
        _, meta = self._shard(k)
        return {key: value for key, value in meta[row].items() if key != "layout"}

    def keys(self) -> list[tuple[str, int]]:
        """(source bag, newest camera stamp) of every sample, without reading images or features."""
        keys = []
        for k, row in self.rows:
            handle, meta = self._shard(k)
            keys.append((meta[row]["bag"], int(handle.get_slice("stamps")[row : row + 1][0])))
        return keys

    def _shard(self, k: int):
        if k not in self._handles:  # opened once per worker process; safetensors memory-maps the file
            handle = safe_open(str(self.root / self.manifest["shards"][k]["file"]), framework="pt")
            self._handles[k] = handle
            self._rows_meta[k] = json.loads(handle.metadata()["samples"])
        return self._handles[k], self._rows_meta[k]

    def __getitem__(self, i: int) -> dict:
        k, row = self.rows[i]
        handle, meta = self._shard(k)
        length = int(handle.get_slice("lengths")[row : row + 1][0])
        info = meta[row]
        return {
            "images": handle.get_slice("images")[row : row + 1][0],
            "input_ids": handle.get_slice("input_ids")[row : row + 1][0, :length].long(),
            "features": handle.get_slice("features")[row : row + 1][0, :length],
            "layout": TokenLayout.from_dict(info["layout"]),
            "source": {k: v for k, v in info.items() if k != "layout"}
            | {"stamp_ns": int(handle.get_slice("stamps")[row : row + 1][0])},
        }

    def __getstate__(self):  # DataLoader workers open their own memory maps
        state = dict(self.__dict__)
        state["_handles"], state["_rows_meta"] = {}, {}
        return state
