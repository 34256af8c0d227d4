"""Teacher-feature datasets: safetensors shards plus ``manifest.json``, read back as a torch Dataset.

Layout of a dataset folder::

    manifest.json            schema_version, num_samples, skipped counts, teacher (checkpoint, content hash,
                             feature_dim, dtype), cameras, source bags, shards (file name, samples, bytes,
                             sha256); written last
    shard-00000.safetensors  images (N, C, 3, S, S) uint8, input_ids (N, Lmax) int32 (right padded),
                             lengths (N,) int32, features (N, Lmax, D) float16 (zero padded), stamps (N,)
                             int64, index (N,) int64; metadata "samples" (JSON: layout, bag, topics,
                             frame_id, instruction per row) and "skipped" (JSON counts of this shard)

A shard is written to a temporary name no other run uses, flushed to disk and renamed, so a shard file that
exists is complete. Readers trust nothing in the folder: shard names must be plain file names inside it, and
each shard's size (at open) and sha256 (on its first read, or at open with ``verify="all"``) must match
the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from ..api import TokenFacts, TokenLayout
from ..output_folder import OutputError, OutputFolder
from ..owned_files import Journal, atomic_file, is_regular_file, read_small_file, save_safetensors

SCHEMA_VERSION = 3  # 2: shards carry their size and sha256; 3: the teacher family's token facts
MANIFEST = "manifest.json"
DATASET_NAMES = (
    MANIFEST,
    "shard-*.safetensors",
)  # what a dataset folder holds (a link or foreign file there is refused)
SHARD_FILE = re.compile(r"^shard-\d{5}\.safetensors$")  # what extract and dataset-from-bag name them
SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.safetensors$")
VERIFY_MODES = ("lazy", "all")


def claim_dataset_folder(out: Path, overwrite: bool, identity: dict) -> OutputFolder:
    """Lock ``out`` for a run that writes a dataset; refuse a finished dataset unless ``overwrite`` (which
    deletes only the files the package wrote there), and unfinished work of a run with another
    ``identity``; a crashed run's temporaries go, its finished shards stay for this run to keep."""
    folder = OutputFolder.claim(out, "dataset", overwrite=overwrite, identity=identity, names=DATASET_NAMES)
    try:
        if os.path.lexists(folder.path / MANIFEST):
            raise OutputError(f"--out {out} holds a finished dataset; pass --overwrite to replace it")
    except BaseException:
        folder.release()
        raise
    return folder


def finished_shards(folder: Path) -> set[str]:
    """The shard files an earlier run of this dataset completed (journaled as the package's, still there)."""
    owned = Journal(folder).state()[0]
    return {name for name in owned if SHARD_FILE.match(name) and is_regular_file(folder / name)}


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


@dataclass
class Sample:
    index: int  # position in the input stream of frame sets
    images: torch.Tensor  # (C, 3, S, S) uint8, the processor's frames
    input_ids: Sequence[int]  # the prompt's ids (the processor's cached tuple, shared, not copied)
    layout: TokenLayout
    features: torch.Tensor  # (L, D) float16
    stamp_ns: int
    source: dict  # bag, topics, frame_id, instruction
    attention: torch.Tensor | None = None  # (L, T) float16: the teacher's attention to the T image tokens


def pad_rows(rows: list[torch.Tensor], length: int, dtype: torch.dtype) -> torch.Tensor:
    """(L_i, ...) tensors -> one (N, length, ...) tensor in ``dtype``, zero past each row's end."""
    padded = torch.zeros((len(rows), length, *rows[0].shape[1:]), dtype=dtype)
    for index, row in enumerate(rows):
        padded[index, : row.shape[0]] = row
    return padded


def file_digest(path: Path, chunk: int = 1 << 24) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def write_shard(
    path: Path, samples: list[Sample], skipped: Counter, feature_dim: int, pad_id: int, durable: bool = True
) -> tuple[int, str]:
    """All samples of one shard, atomically (a temporary name of this process, renamed when complete); returns
    the file's (size, sha256) for the manifest. ``durable``: flush it to disk before the rename; ``extract``
    passes False and flushes all its shards at once before its manifest (``sync_files``), so that the
    writers do not wait on the disk one shard at a time."""
    n = len(samples)
    length = max((len(s.input_ids) for s in samples), default=0)
    cameras = samples[0].images.shape[0] if samples else 0
    image_size = samples[0].images.shape[-1] if samples else 0
    input_ids = np.full((n, length), pad_id, dtype=np.int32)  # numpy takes tuples of ints fast
    features = torch.empty((n, length, feature_dim), dtype=torch.float16)  # one pass over fresh memory, not two
    for row, sample in enumerate(samples):
        input_ids[row, : len(sample.input_ids)] = sample.input_ids
        tokens = sample.features.shape[0]
        features[row, :tokens] = sample.features  # cast to float16 by the copy
        features[row, tokens:] = 0
    tensors = {
        "images": torch.stack([s.images for s in samples])
        if samples
        else torch.zeros((0, cameras, 3, image_size, image_size), dtype=torch.uint8),
        "input_ids": torch.from_numpy(input_ids),
        "lengths": torch.tensor([len(s.input_ids) for s in samples], dtype=torch.int32),
        "features": features,
        "stamps": torch.tensor([s.stamp_ns for s in samples], dtype=torch.int64),
        "index": torch.tensor([s.index for s in samples], dtype=torch.int64),
    }
    if samples and samples[0].attention is not None:  # extract --attention: (N, L, T)
        tensors["attention"] = pad_rows([s.attention for s in samples], length, torch.float16)
    rows = [{"layout": s.layout.to_dict(), **s.source} for s in samples]
    metadata = {"samples": json.dumps(rows), "skipped": json.dumps(dict(sorted(skipped.items())))}
    with atomic_file(path) as tmp:
        save_safetensors(tensors, tmp, metadata, path)
        digest = file_digest(tmp)  # read back while the pages are still cached
        if durable:
            sync_files([tmp])
    return digest


def sync_files(paths, threads: int = 8) -> None:
    """fsync each file (in parallel: the kernel writes most of them back meanwhile anyway)."""

    def sync(path) -> None:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(sync, paths))


SHARD_TENSORS = {"images": 5, "input_ids": 2, "lengths": 1, "features": 3, "stamps": 1, "index": 1}  # name -> ndim


def read_shard_info(path: Path, feature_dim: int | None = None, attention: bool = False) -> tuple[int, dict]:
    """(number of samples, skipped counts) of a shard, from its header only; ValueError naming a damaged
    one. With ``feature_dim``, its tensors must also have the dataset's shapes (a manifest that lies about the
    feature width, or a shard of another dataset, is refused, naming the tensor)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            shapes = {name: handle.get_slice(name).get_shape() for name in handle.keys()}
            count, skipped = shapes["index"][0], json.loads(metadata.get("skipped", "{}"))
    except (SafetensorError, OSError, ValueError, KeyError, IndexError) as err:
        raise ValueError(f"{path}: not a readable dataset shard ({err})") from None
    if feature_dim is not None:
        check_shard_shapes(path, shapes, count, feature_dim, attention)
    return count, skipped


def check_shard_shapes(path: Path, shapes: dict, count: int, feature_dim: int, attention: bool = False) -> None:
    if attention:  # (N, L, T) beside input_ids (N, L): extract --attention
        shape = shapes.get("attention")
        if shape is None or len(shape) != 3 or shape[0] != count or shape[1] != shapes["input_ids"][1]:
            raise ValueError(
                f"{path}: tensor 'attention' has shape {shape}, expected (N, L, T) beside input_ids "
                f"{shapes['input_ids']}: the manifest says the dataset holds the teacher's attention"
            )
    for name, ndim in SHARD_TENSORS.items():
        shape = shapes.get(name)
        if shape is None or len(shape) != ndim or shape[0] != count:
            raise ValueError(f"{path}: tensor {name!r} has shape {shape}, expected {ndim} dimensions and {count} rows")
    if shapes["features"][-1] != feature_dim or shapes["features"][1] != shapes["input_ids"][1]:
        raise ValueError(
            f"{path}: features of shape {shapes['features']} and input_ids of shape {shapes['input_ids']}, "
            f"expected features (N, L, {feature_dim}) beside input_ids (N, L): the manifest's feature_dim is "
            f"{feature_dim}"
        )


def shard_path(root: Path, name) -> Path:
    """``root / name`` for a manifest's shard name, which must be a plain file name inside ``root``."""
    if not isinstance(name, str) or not SHARD_NAME.match(name):
        raise ValueError(
            f"{root / MANIFEST}: shard name {name!r} is not a plain *.safetensors file name in the "
            "dataset folder; refusing to read it"
        )
    path = root / name
    if path.is_symlink():
        raise ValueError(f"{path}: is a symbolic link; a dataset's shards must be files inside its folder")
    return path


class FeatureDataset(torch.utils.data.Dataset):
    """Samples of a finished dataset, read lazily from memory-mapped shards.

    ``dataset[i]`` -> dict with ``images`` (C, 3, S, S) uint8, ``input_ids`` (L,) int64, ``features``
    (L, D) float16, ``layout`` (TokenLayout) and ``source`` (bag, topics, frame_id, instruction, stamp).

    Verification: at open, every shard must be a plain file name inside ``root`` with the manifest's size
    and sample count (cheap: a stat and a header each). Each shard's sha256 is checked the first time it is
    read (``verify="lazy"``, the default: opening a large dataset to look at its manifest or a few samples
    costs no full read, and training reads every shard anyway), or for every shard at open
    (``verify="all"``). A shard that differs is refused with a ValueError naming it.
    """

    def __init__(self, root: str | Path, verify: str = "lazy"):
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify {verify!r}: expected one of {list(VERIFY_MODES)}")
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not os.path.lexists(manifest_path):
            raise ValueError(
                f"{self.root}: no {MANIFEST}; not a finished dataset (an interrupted extract "
                "resumes when run again with the same arguments)"
            )
        try:
            self.manifest = json.loads(read_small_file(manifest_path, 256 << 20))
            shards = self.manifest["shards"]
            expected_total = int(self.manifest["num_samples"])
        except OutputError:
            raise
        except (ValueError, KeyError, TypeError, OSError) as err:
            raise ValueError(f"{manifest_path}: not a dataset manifest ({err})") from None
        if self.manifest.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"{manifest_path}: schema_version {self.manifest.get('schema_version')}, expected "
                f"{SCHEMA_VERSION} (a dataset from an older version: extract it again)"
            )
        teacher = self.manifest.get("teacher")
        if not isinstance(teacher, dict) or type(teacher.get("feature_dim")) is not int or teacher["feature_dim"] < 1:
            raise ValueError(f"{manifest_path}: teacher.feature_dim is missing or not a whole number >= 1")
        if not isinstance(shards, list):
            raise ValueError(f"{manifest_path}: shards is not a list")
        self.rows: list[tuple[int, int]] = []
        self._paths: list[Path] = []
        for k, shard in enumerate(shards):
            path = shard_path(self.root, shard.get("file") if isinstance(shard, dict) else None)
            if not path.is_file():
                raise ValueError(f"{self.root}: manifest lists {shard['file']}, which is missing")
            if path.stat().st_size != shard.get("bytes"):
                raise ValueError(
                    f"{path}: {path.stat().st_size} bytes, the manifest says {shard.get('bytes')}; "
                    "the shard was changed or damaged after extract wrote it"
                )
            count, _ = read_shard_info(path, self.feature_dim, self.has_attention)  # with every tensor's shape
            if count != shard["num_samples"]:
                raise ValueError(f"{path}: holds {count} samples, the manifest says {shard['num_samples']}")
            self._paths.append(path)
            self.rows += [(k, row) for row in range(count)]
        if len(self.rows) != expected_total:
            raise ValueError(f"{manifest_path}: num_samples {expected_total} but the shards hold {len(self.rows)}")
        self._handles: dict[int, object] = {}
        self._rows_meta: dict[int, list[dict]] = {}
        self._verified: set[int] = set()
        if verify == "all":  # hashlib releases the GIL on large reads: one thread per core, within reason
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                list(pool.map(self._verify, range(len(self._paths))))

    def _verify(self, k: int) -> None:
        if k in self._verified:
            return
        path, expected = self._paths[k], self.manifest["shards"][k]
        size, sha256 = file_digest(path)
        if (size, sha256) != (expected.get("bytes"), expected.get("sha256")):
            raise ValueError(
                f"{path}: content does not match the manifest's sha256 (the shard was changed or "
                "damaged after extract wrote it); refusing to serve it"
            )
        self._verified.add(k)

    @property
    def facts(self) -> TokenFacts:
        """The teacher family's token facts (image token id, pad id, grid) the samples were made with."""
        return TokenFacts.from_dict(self.manifest.get("tokens"), f"{self.root / MANIFEST}: tokens")

    @property
    def has_attention(self) -> bool:
        """Whether the shards hold the teacher's attention to the image tokens (``extract --attention``)."""
        return self.manifest.get("attention") is True

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
            self._verify(k)
            try:
                handle = safe_open(str(self._paths[k]), framework="pt")
                self._rows_meta[k] = json.loads(handle.metadata()["samples"])
            except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{self._paths[k]}: not a readable dataset shard ({err})") from None
            self._handles[k] = handle
        return self._handles[k], self._rows_meta[k]

    def __getitem__(self, i: int) -> dict:
        k, row = self.rows[i]
        try:
            return self._read(k, row)
        except (KeyError, TypeError, IndexError, SafetensorError) as err:  # a shard whose rows are malformed
            raise ValueError(f"{self._paths[k]}: sample row {row} is malformed ({type(err).__name__}: {err})") from None

    def _read(self, k: int, row: int) -> dict:
        handle, meta = self._shard(k)
        length = int(handle.get_slice("lengths")[row : row + 1][0])
        info = meta[row]
        sample = {
            "images": handle.get_slice("images")[row : row + 1][0],
            "input_ids": handle.get_slice("input_ids")[row : row + 1][0, :length].long(),
            "features": handle.get_slice("features")[row : row + 1][0, :length],
            "layout": TokenLayout.from_dict(info["layout"]),
            "source": {k: v for k, v in info.items() if k != "layout"}
            | {"stamp_ns": int(handle.get_slice("stamps")[row : row + 1][0])},
        }
        if self.has_attention:  # (L, T): the teacher's attention to the image tokens (extract --attention)
            sample["attention"] = handle.get_slice("attention")[row : row + 1][0, :length]
        return sample

    def __getstate__(self):  # DataLoader workers open their own memory maps (verified shards stay verified)
        state = dict(self.__dict__)
        state["_handles"], state["_rows_meta"] = {}, {}
        return state
