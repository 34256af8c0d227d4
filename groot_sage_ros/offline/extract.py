"""``groot-sage extract``: bags in, teacher features out (a dataset, optionally a bag with a features topic).

Frame sets are numbered in stream order; shard k holds numbers [k*S, (k+1)*S). Under ``torchrun`` rank r
computes the shards with k % world_size == r (every rank reads the stream, only its own frames are
decoded), so the shard files are the same whatever the number of processes; rank 0 writes the manifest
once all ranks are done. A shard file is renamed into place only when complete, so a run that stops
resumes by skipping the shards that exist. The manifest is written last: a folder without one is unfinished.

The run owns ``--out`` (and ``--out-bag``) for its lifetime (``output_folder``): rank 0 claims both before
the model loads, after checking the bags (``survey_bags``), so a wrong topic, a missing instruction or a
busy folder costs seconds, not a model load. A run whose frame sets all fail writes no manifest.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..checkpoint import content_hash, read_checkpoint_files
from ..config import RuntimeConfig
from ..cpu_threads import available_cores, set_cpu_threads
from ..engine import FeatureExtractor, resolve_device
from ..output_folder import OutputFolder, write_json_atomic
from .bags import claim_bag_folder
from .dataset import DATASET_FILES, MANIFEST, SCHEMA_VERSION, file_digest, read_shard_info, shard_name
from .frame_sets import read_frame_sets, survey_bags
from .pipeline import ShardPipeline, prefetch, prepare


def distributed(device: str) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment, with a process group when world > 1:
    NCCL with each rank on GPU ``LOCAL_RANK`` when ``device`` is CUDA, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.startswith("cuda"):
            visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if local_rank >= visible:
                raise ValueError(f"--device {device} under torchrun: local rank {local_rank} needs GPU {local_rank}, "
                                 f"but {visible} GPU(s) are visible")  # fmt: skip
            # The rank's GPU becomes the current device before anything else touches CUDA: NCCL's communicator,
            # barrier() and every call that takes the current device use it (a run without this hung on the
            # two-H200 machine: rank 1 reported no batch while rank 0 waited at the final barrier).
            gpu = torch.device("cuda", local_rank)
            torch.cuda.set_device(gpu)
            dist.init_process_group("nccl", device_id=gpu)
        else:
            dist.init_process_group("gloo")
    return dist.get_rank(), world, local_rank


def rank_device(device: str, world: int, local_rank: int) -> str:
    """The device one process runs on. Under torchrun (world > 1) a CUDA ``--device`` means the rank's own
    GPU, ``cuda:LOCAL_RANK``, the one ``distributed`` bound NCCL to (pick the GPUs with
    ``CUDA_VISIBLE_DEVICES``, not with an index); any other device is taken as given."""
    return f"cuda:{local_rank}" if world > 1 and device.startswith("cuda") else device


def end_distributed() -> None:
    """Tear down the process group before exit; left to the interpreter's teardown, gloo's threads can abort."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


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


def claim_output(out: Path, overwrite: bool) -> OutputFolder:
    """Lock ``out`` for this run; refuse a finished dataset unless ``overwrite`` (which deletes only the
    dataset's own files); clear a crashed run's temporaries, keeping its finished shards for the resume."""
    folder = OutputFolder.claim(out, "dataset", DATASET_FILES, overwrite=overwrite)
    if (out / MANIFEST).exists():
        folder.release()
        raise ValueError(f"{out} holds a finished dataset; pass --overwrite to replace it")
    folder.remove_stale_temporaries()
    return folder


def run_extract(args) -> dict:
    rank, world, local_rank = distributed(args.device)
    out = Path(args.out)
    device = rank_device(args.device, world, local_rank)
    resolve_device(device)  # CUDA asked for but absent: one line before anything else
    total, owned = None, {}
    try:
        if rank == 0:
            total = survey_bags(args.bags, args.camera_topics, args.instruction_topic, args.instruction)
            owned["out"] = claim_output(out, args.overwrite)
            if args.out_bag:
                owned["out_bag"] = claim_bag_folder(args.out_bag, "--out-bag")
        barrier(world)
        return extract_into(args, out, rank, world, device, total, owned)
    finally:
        for folder in owned.values():
            folder.release()


def extract_into(args, out: Path, rank: int, world: int, device: str, total: int | None, owned: dict) -> dict:
    """The extraction proper, into a claimed ``out`` (``owned`` holds rank 0's claimed folders)."""
    extractor = FeatureExtractor.from_pretrained(args.checkpoint, device=device, dtype=args.dtype,
                                                 tokenizer=args.tokenizer, runtime=RuntimeConfig.from_attributes(args),
                                                 warmup=False)  # fmt: skip
    # compile for, and capture, the full batch of the run's cameras (and its instruction, when fixed) before timing
    extractor.warmup(cameras=len(args.camera_topics), instruction=args.instruction or "warm up", batch=args.batch_size)
    # The manifest's teacher hash reads every weight file (about 9 s a run at full size in a py-spy profile on
    # the H100 machine); rank 0 runs it beside the extraction (hashlib and file reads release the GIL).
    hasher = ThreadPoolExecutor(max_workers=1)
    teacher_hash = hasher.submit(content_hash, read_checkpoint_files(args.checkpoint)) if rank == 0 else None
    size = args.shard_size
    counts: Counter = Counter()
    progress = Progress(total)
    pipeline = ShardPipeline(extractor, out, args.batch_size, size, progress)
    start, captured_before = time.perf_counter(), extractor.capture_seconds
    stream = read_frame_sets(args.bags, args.camera_topics, args.instruction_topic, counts,
                             instruction=args.instruction, sync_slop_s=args.sync_slop_s)  # fmt: skip
    mine = (fs for fs in stream  # skip another rank's shards, and shards finished by an earlier run
            if (fs.index // size) % world == rank and not (out / shard_name(fs.index // size)).exists())  # fmt: skip
    if extractor.device.type == "cuda":
        # Parallelism comes from the worker threads; one intra-op thread each keeps OpenMP teams from
        # oversubscribing the cores and starving the thread that launches the GPU work.
        workers = args.workers or min(8, os.cpu_count() or 1)
        torch.set_num_threads(1)
    else:  # the model computes on the cores too: half of them decode, the rest (less load) compute
        workers = args.workers or max(1, min(8, available_cores() // 2))
        set_cpu_threads("extract", args.threads, busy_threads=workers, processes=world)
    tick = time.perf_counter()
    try:
        for item in prefetch(lambda fs: prepare(extractor.processor, fs), mine, workers, depth=2 * args.batch_size + 8):
            pipeline.phases["inputs_s"] += time.perf_counter() - tick
            pipeline.add(item)
            tick = time.perf_counter()
        pipeline.finish()
    except BaseException:
        pipeline.abort()
        raise
    phases = pipeline.phases
    progress.update(0, final=True)
    barrier(world)
    seconds = time.perf_counter() - start  # reading, decoding, preprocessing, model, writing; not loading
    frames = progress.done
    if world > 1:  # all ranks' frames over the slowest rank's time
        import torch.distributed as dist

        totals = torch.tensor([float(frames), seconds], dtype=torch.float64, device=extractor.device)  # NCCL: GPU
        frames_t, seconds_t = totals[:1].clone(), totals[1:].clone()
        dist.all_reduce(frames_t)
        dist.all_reduce(seconds_t, op=dist.ReduceOp.MAX)
        frames, seconds = int(frames_t.item()), seconds_t.item()
    if rank != 0:
        return {}
    manifest = write_manifest(out, args, extractor, counts, teacher_hash.result(), pipeline.digests, owned["out"])
    hasher.shutdown()
    phases["graph_capture_s"] = extractor.capture_seconds - captured_before  # shapes first seen during the run
    manifest["timing"] = {"seconds": seconds, "frame_sets": frames, "processes": world,
                          "frame_sets_per_s": frames / seconds if seconds else 0.0,
                          **{k: round(v, 3) for k, v in phases.items()}}  # fmt: skip
    if args.out_bag:
        from .feature_bag import write_feature_bag

        write_feature_bag(out, args.out_bag, args.bags, args.camera_topics, args.instruction_topic,
                          folder=owned["out_bag"])  # fmt: skip
        manifest["out_bag"] = str(args.out_bag)
    return manifest


def write_manifest(out: Path, args, extractor: FeatureExtractor, counts: Counter, teacher_hash: str,
                   digests: dict[str, tuple[int, str]], folder: OutputFolder) -> dict:  # fmt: skip
    """The manifest, written last and atomically. ``digests`` holds this process's shards' (bytes, sha256);
    shards of other ranks or of an interrupted earlier run are hashed here, in parallel."""
    paths = sorted(out.glob("shard-*.safetensors"))
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
        folder.delete_own_files(DATASET_FILES)  # so that a corrected rerun starts afresh
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
            "feature_dim": extractor.feature_dim,
            "features_dtype": "float16",
            "model_dtype": args.dtype,
            "tokenizer": args.tokenizer or "qwen-tiktoken",
            "instruction_format": extractor.processor.config.instruction_format,
        },
        "image_size": extractor.processor.config.image_size,
        "tokens_per_image": extractor.processor.config.tokens_per_image,
        "camera_topics": list(args.camera_topics),
        "instruction_topic": args.instruction_topic,
        "instruction_override": args.instruction,
        "source_bags": [str(b) for b in args.bags],
        "shard_size": args.shard_size,
        "shards": shards,
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest
