"""``groot-sage extract``: bags in, teacher features out (a dataset, optionally a bag with a features topic).

Frame sets are numbered in stream order; shard k holds numbers [k*S, (k+1)*S). Under ``torchrun`` rank r
computes the shards with k % world_size == r (every rank reads the stream, only its own frames are
decoded), so the shard files are the same whatever the number of processes; rank 0 writes the manifest
once all ranks are done. A shard file is renamed into place only when complete, so a run that stops
resumes by skipping the shards that exist. The manifest is written last: a folder without one is unfinished.

The run owns ``--out`` (and ``--out-bag``) for its lifetime (``output_folder``): rank 0 claims both before
the model loads, after checking the bags (``survey_bags``) and ``--instruction``, so a wrong topic, a bad
instruction or a busy folder costs seconds, not a model load. A run whose frame sets all fail writes no
manifest, and leaves no folder it created.

Resuming is safe: the folder records the run's identity (``extract_identity``: the bags' sizes and
metadata hashes, every option that changes the samples, and the teacher's content hash, hashed while the
model loads and checked before the first shard is written). A rerun with a different identity is refused
with one line naming the field, and only shards the journal lists as this dataset's are kept.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..api import FeatureEngine
from ..checkpoint import content_hash, read_checkpoint_files
from ..cpu_threads import available_cores, set_cpu_threads
from ..engine import RuntimeConfig, load_engine, load_processor, resolve_device
from ..output_folder import OutputFolder
from ..owned_files import write_json_atomic
from ..serving.instructions import check_instruction
from .bags import bag_fingerprint, claim_bag_folder
from .dataset import (
    MANIFEST,
    SCHEMA_VERSION,
    claim_dataset_folder,
    file_digest,
    finished_shards,
    read_shard_info,
    shard_name,
    sync_files,
)
from .distributed import barrier, distributed, gather_json, rank_device
from .frame_sets import read_frame_sets, survey_bags
from .pipeline import ShardPipeline, prefetch, prepare


class Progress:
    """Frame sets per second and ETA on stderr, at most every ``period`` seconds."""

    def __init__(self, total: int | None, period: float = 2.0):
        self.total, self.period, self.start, self.last, self.done = total, period, time.monotonic(), 0.0, 0

    def update(self, n: int, final: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if not final and now - self.last < self.period:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = f", ETA {(self.total - self.done) / rate:.0f} s" if self.total and rate > 0 else ""
        of = f"/{self.total}" if self.total else ""
        print(f"extract: {self.done}{of} frame sets computed, {rate:.1f} frame sets/s{eta}", file=sys.stderr)


def extract_identity(args, device: str) -> dict:
    """What shapes the samples of an extract run (the teacher's content hash is added once hashed)."""
    return {
        "command": "extract",
        "bags": [bag_fingerprint(bag) for bag in args.bags],
        "camera_topics": list(args.camera_topics),
        "instruction_topic": args.instruction_topic,
        "instruction": args.instruction,
        "tokenizer": args.tokenizer,
        "dtype": args.dtype,
        "precision": args.precision,
        "fp8_min_rows": args.fp8_min_rows if args.precision == "fp8" else None,
        "device_type": device.split(":")[0],
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "sync_slop_s": args.sync_slop_s,
        **({"attention": True} if args.attention else {}),  # so that datasets from before it resume as they were
    }


def run_extract(args) -> dict:
    rank, world, local_rank = distributed(args.device)
    out = Path(args.out)
    device = rank_device(args.device, world, local_rank)
    resolve_device(device)  # CUDA asked for but absent: one line before anything else
    if args.instruction is not None:  # the check every instruction passes, before any heavy work
        try:
            check_instruction(args.instruction, load_processor(args.checkpoint, args.tokenizer))
        except ValueError as err:
            raise ValueError(f"--instruction: {err}") from None
    total, owned = None, {}
    # The teacher's content hash reads every weight file (about 9 s at full size on the H100 machine): rank 0
    # hashes while the model loads (hashlib and file reads release the GIL), and checks it before writing.
    hasher = ThreadPoolExecutor(max_workers=1)
    try:
        if rank == 0:
            total = survey_bags(args.bags, args.camera_topics, args.instruction_topic, args.instruction)
            owned["out"] = claim_dataset_folder(out, args.overwrite, extract_identity(args, device))
            if args.out_bag:
                owned["out_bag"] = claim_bag_folder(args.out_bag, "--out-bag")
            owned["hash"] = hasher.submit(content_hash, read_checkpoint_files(args.checkpoint))
        barrier(world)
        return extract_into(args, out, rank, world, device, total, owned)
    except BaseException:
        for folder in (owned.get("out"), owned.get("out_bag")):
            if folder is not None:
                folder.discard_if_unused()  # nothing written: no folder left behind
        raise
    finally:
        for folder in (owned.get("out"), owned.get("out_bag")):
            if folder is not None:
                folder.release()
        hasher.shutdown(wait=False, cancel_futures=True)


def extract_into(args, out: Path, rank: int, world: int, device: str, total: int | None, owned: dict) -> dict:
    """The extraction proper, into a claimed ``out`` (``owned`` holds rank 0's claimed folders and the
    teacher's content hash, pending)."""
    started = time.perf_counter()
    engine = load_engine(
        args.checkpoint,
        device=device,
        dtype=args.dtype,
        tokenizer=args.tokenizer,
        runtime=RuntimeConfig.from_attributes(args),
        warmup=False,
    )
    # compile for, and capture, the full batch of the run's cameras (and its instruction, when fixed) before timing
    engine.warmup(cameras=len(args.camera_topics), instruction=args.instruction or "warm up", batch=args.batch_size)
    start_s = time.perf_counter() - started  # load, compile, graph capture
    teacher_hash = None
    if rank == 0:  # the same teacher as the shards already here, before any shard is added to them
        teacher_hash = owned["hash"].result()
        owned["out"].settle_identity({"teacher_content_hash": teacher_hash})
    barrier(world)
    done = finished_shards(out)  # an earlier run's, of this identity
    size = args.shard_size
    counts: Counter = Counter()
    progress = Progress(total)
    pipeline = ShardPipeline(engine, out, args.batch_size, size, progress, attention=args.attention)
    start, captured_before = time.perf_counter(), engine.capture_seconds
    stream = read_frame_sets(
        args.bags,
        args.camera_topics,
        args.instruction_topic,
        counts,
        instruction=args.instruction,
        sync_slop_s=args.sync_slop_s,
        check_instruction=lambda text: check_instruction(text, engine.processor),
    )
    mine = (
        fs
        for fs in stream  # skip another rank's shards, and shards finished by an earlier run
        if (fs.index // size) % world == rank and shard_name(fs.index // size) not in done
    )
    if engine.device.type == "cuda":
        # Parallelism comes from the worker threads; one intra-op thread each keeps OpenMP teams from
        # oversubscribing the cores and starving the thread that launches the GPU work.
        workers = args.workers or min(8, os.cpu_count() or 1)
        torch.set_num_threads(1)
    else:  # the model computes on the cores too: half of them decode, the rest (less load) compute
        workers = args.workers or max(1, min(8, available_cores() // 2))
        set_cpu_threads("extract", args.threads, busy_threads=workers, processes=world)
    tick = time.perf_counter()
    try:
        for item in prefetch(lambda fs: prepare(engine.processor, fs), mine, workers, depth=2 * args.batch_size + 8):
            pipeline.phases["inputs_s"] += time.perf_counter() - tick
            pipeline.add(item)
            tick = time.perf_counter()
        pipeline.finish()
    except BaseException:
        pipeline.abort()
        raise
    phases = pipeline.phases
    phases["graph_capture_s"] = engine.capture_seconds - captured_before  # shapes first seen during the run
    progress.update(0, final=True)
    seconds = time.perf_counter() - start  # reading, decoding, preprocessing, model, writing; not loading
    mine_done = {
        "frames": progress.done,
        "seconds": seconds,
        "start_s": start_s,
        "digests": pipeline.digests,
        "phases": {k: round(v, 3) for k, v in phases.items()},
    }
    ranks = gather_json(mine_done, world, engine.device)  # after every rank's last write (NCCL: on the GPU)
    if rank != 0:
        return {}
    frames, seconds = sum(r["frames"] for r in ranks), max(r["seconds"] for r in ranks)
    timing = {
        "seconds": seconds,
        "frame_sets": frames,
        "processes": world,  # all ranks' work, slowest rank's time
        "frame_sets_per_s": frames / seconds if seconds else 0.0,
        **ranks[0]["phases"],
        "rank_start_s": [round(r["start_s"], 2) for r in ranks],
        "rank_seconds": [round(r["seconds"], 2) for r in ranks],
    }
    digests = {name: tuple(digest) for r in ranks for name, digest in r["digests"].items()}
    manifest = write_manifest(out, args, engine, counts, teacher_hash, digests, owned["out"], timing)
    if args.out_bag:
        from .feature_bag import write_feature_bag

        write_feature_bag(
            out, args.out_bag, args.bags, args.camera_topics, args.instruction_topic, folder=owned["out_bag"]
        )
        manifest["out_bag"] = str(args.out_bag)
    return manifest


def write_manifest(
    out: Path,
    args,
    engine: FeatureEngine,
    counts: Counter,
    teacher_hash: str,
    digests: dict[str, tuple[int, str]],
    folder: OutputFolder,
    timing: dict,
) -> dict:
    """The manifest, written last and atomically. ``digests`` holds the (bytes, sha256) of the shards this run's
    ranks wrote; shards of an interrupted earlier run are hashed here, in parallel."""
    paths = [out / name for name in sorted(finished_shards(out))]  # the journal's, never a name pattern
    tick = time.perf_counter()
    sync_files(paths)  # every shard on disk before a manifest says the dataset is complete
    folder.journal.sync()  # and the record that they are this package's
    timing["sync_s"] = round(time.perf_counter() - tick, 2)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        hashed = dict(zip([p.name for p in paths], pool.map(lambda p: digests.get(p.name) or file_digest(p), paths)))
    shards, skipped, total = [], Counter({k: v for k, v in counts.items() if v}), 0
    for path in paths:
        count, shard_skips = read_shard_info(path)
        skipped.update(shard_skips)
        size, sha256 = hashed[path.name]
        shards.append({"file": path.name, "num_samples": count, "bytes": size, "sha256": sha256})
        total += count
    if total == 0:
        folder.delete_own_files()  # so that a corrected rerun starts afresh
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "no frame sets in the bags"
        hint = " (pass --instruction TEXT)" if "no_instruction" in skipped else ""
        raise ValueError(f"no frame set became a sample, so no dataset was written to {out}; skipped: {reasons}{hint}")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "num_samples": total,
        "skipped": dict(sorted(skipped.items())),
        "teacher": {
            "checkpoint": str(args.checkpoint),
            "content_hash": teacher_hash,
            "feature_dim": engine.feature_dim,
            "features_dtype": "float16",
            "model_dtype": args.dtype,
            **engine.processor.describe(),  # tokenizer, instruction_format, image_size, tokens_per_image
        },
        "tokens": engine.facts.to_dict(),
        "camera_topics": list(args.camera_topics),
        "instruction_topic": args.instruction_topic,
        "instruction_override": args.instruction,
        "source_bags": [str(b) for b in args.bags],
        "shard_size": args.shard_size,
        # extract --attention: each sample's (L, T) attention to the image tokens in the last kept layer
        "attention": bool(args.attention),
        "run": folder.recorded_identity(),
        "shards": shards,
        "timing": timing,
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest
