"""The package's shard writer (byte-reproducible safetensors, journaled atomic write) against the
safetensors library's ``save_file`` with a plain rename, on the same tensors, alternating run by run.

    python benchmarks/shard_writer.py --samples 64 --runs 15 --out benchmarks/shard_writer.json

A shard as ``extract`` writes one at full size: 295 tokens of 2048-d fp16 features and one 224x224 frame a
sample. Writes go to the page cache (no fsync, as extract's writer threads), in a temporary folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from groot_sage_ros.output_folder import OutputFolder
from groot_sage_ros.owned_files import atomic_file, save_safetensors


def shard_tensors(samples: int) -> tuple[dict, dict]:
    tensors = {
        "features": torch.randn(samples, 295, 2048).half(),
        "images": torch.randint(0, 255, (samples, 1, 3, 224, 224), dtype=torch.uint8),
        "input_ids": torch.zeros(samples, 295, dtype=torch.int32),
        "lengths": torch.full((samples,), 295, dtype=torch.int32),
        "stamps": torch.arange(samples, dtype=torch.int64),
        "index": torch.arange(samples, dtype=torch.int64),
    }
    return tensors, {"samples": json.dumps([{"bag": "b", "frame_id": "f"}] * samples), "skipped": "{}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64, help="samples a shard (default: 64)")
    parser.add_argument("--runs", type=int, default=15, help="writes of each kind (default: 15)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    tensors, metadata = shard_tensors(args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        ours = OutputFolder.claim(Path(tmp) / "ours", "dataset")
        library = Path(tmp) / "library"
        library.mkdir()
        times: dict[str, list[float]] = {"package_writer_ms": [], "library_save_file_ms": []}
        digests: dict[str, set[str]] = {"package_writer_ms": set(), "library_save_file_ms": set()}
        for run in range(args.runs):
            final = ours.path / f"shard-{run:05d}.safetensors"
            tick = time.perf_counter()
            with atomic_file(final) as part:
                save_safetensors(tensors, part, metadata, final)
            times["package_writer_ms"].append((time.perf_counter() - tick) * 1000)
            digests["package_writer_ms"].add(hashlib.sha256(final.read_bytes()).hexdigest())
            final = library / f"shard-{run:05d}.safetensors"
            tick = time.perf_counter()
            save_file(tensors, str(library / ".part"), metadata=metadata)
            os.replace(library / ".part", final)
            times["library_save_file_ms"].append((time.perf_counter() - tick) * 1000)
            digests["library_save_file_ms"].add(hashlib.sha256(final.read_bytes()).hexdigest())
        ours.release()
    size = sum(t.numel() * t.element_size() for t in tensors.values()) / 1e6
    report = {
        "shard_mb": round(size, 1),
        "runs": args.runs,
        **{name: round(statistics.median(values), 1) for name, values in times.items()},
        "distinct_files": {name.removesuffix("_ms"): len(values) for name, values in digests.items()},
        "command": "python benchmarks/shard_writer.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
