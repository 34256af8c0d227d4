"""``groot-sage extract``: bags in, teacher features out (a dataset, optionally a bag with a features topic).

Frame sets are numbered in stream order; shard k holds numbers [k*S, (k+1)*S). Under ``torchrun`` rank r
computes the shards with k % world_size == r (every rank reads the stream, only its own frames are
decoded), so the shard files are the same whatever the number of processes; rank 0 writes the manifest
once all ranks are done. A shard file is renamed into place only when complete, so a run that stops
resumes by skipping the shards that exist. The manifest is written last: a folder without one is unfinished.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..checkpoint import content_hash, read_checkpoint_files
from ..config import RuntimeConfig
from ..decoding import BadImage
from ..engine import FeatureExtractor
from .dataset import MANIFEST, SCHEMA_VERSION, Sample, read_shard_info, shard_name, write_shard
from .frame_sets import RecordedFrameSet, read_frame_sets

log = logging.getLogger(__name__)

BATCHES_IN_FLIGHT = 2  # queued on the device or waiting for the collector; each holds pinned result buffers
WRITER_THREADS = 2  # one thread writes about 1,300 samples/s of 295x2048 features on the H100 machine


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment, with a process group when world > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


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


def camera_message_count(bags: list[str], topic: str) -> int | None:
    """Messages on ``topic`` per the bags' metadata (for the ETA); None if unknown."""
    from rosbags.rosbag2 import Reader

    total = 0
    try:
        for bag in bags:
            with Reader(Path(bag)) as reader:
                total += sum(c.msgcount for c in reader.connections if c.topic == topic)
    except Exception:  # noqa: BLE001 -- only an estimate; broken bags are reported by the real pass
        return None
    return total


def prepare_output(out: Path, overwrite: bool, rank: int, world: int) -> None:
    if rank == 0:
        if (out / MANIFEST).exists() and not overwrite:
            raise ValueError(f"{out} holds a finished dataset; pass --overwrite to replace it")
        if overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob("*.tmp"):  # half-written shards of an interrupted run
            stale.unlink()
    barrier(world)


def run_extract(args) -> dict:
    rank, world, local_rank = distributed()
    out = Path(args.out)
    prepare_output(out, args.overwrite, rank, world)
    device = args.device
    if device.startswith("cuda") and world > 1 and ":" not in device:
        device = f"cuda:{local_rank}"
    extractor = FeatureExtractor.from_pretrained(args.checkpoint, device=device, dtype=args.dtype,
                                                 tokenizer=args.tokenizer, runtime=RuntimeConfig.from_attributes(args),
                                                 warmup=False)  # fmt: skip
    extractor.warmup(batch=args.batch_size)  # compile for, and capture, the full batch before timing
    # The manifest's teacher hash reads every weight file (about 9 s for the 3B checkpoint's 6 GB on the H100
    # machine); rank 0 runs it beside the extraction (hashlib and file reads release the GIL).
    hasher = ThreadPoolExecutor(max_workers=1)
    teacher_hash = hasher.submit(content_hash, read_checkpoint_files(args.checkpoint)) if rank == 0 else None
    size = args.shard_size
    counts: Counter = Counter()
    current_shard, samples, shard_skips = -1, [], Counter()
    batch: list[Prepared] = []
    progress = Progress(camera_message_count(args.bags, args.camera_topics[0]) if rank == 0 else None)
    phases = Counter()  # seconds the main thread waits for inputs, queues batches, waits for the device; the drain

    # Three stages overlap. The main thread queues batch k on the device; the collector thread waits for batch
    # k-1's copies and turns them into samples; the writer threads write closed shards. The collector runs one
    # task at a time, so samples reach their shard in stream order and a shard is written after its last batch.
    collector = ThreadPoolExecutor(max_workers=1)
    writer = ThreadPoolExecutor(max_workers=WRITER_THREADS)
    write_slots = threading.Semaphore(2 * WRITER_THREADS)  # closed shards held in memory, not yet written
    gathering: deque = deque()  # collector futures, oldest first
    copy_stream = torch.cuda.Stream(extractor.device) if extractor.device.type == "cuda" else None
    writes: list = []

    def gather(prepared: list[Prepared], pending: InFlight | None, shard_samples: list, skips: Counter) -> None:
        for item in prepared:
            if item.skip_reason:
                skips[item.skip_reason] += 1
        if pending is not None:
            shard_samples.extend(pending.samples(skips))
        progress.update(len(prepared))

    def close(shard: int, shard_samples: list, skips: Counter) -> None:
        write_slots.acquire()  # back-pressure: the collector, then the main thread, wait for slow disks
        write = writer.submit(write_shard, out / shard_name(shard), shard_samples, skips, extractor.feature_dim)
        write.add_done_callback(lambda _: write_slots.release())
        writes.append(write)

    def flush_batch():
        tick = time.perf_counter()
        pending = launch(extractor, batch, args.batch_size, copy_stream)
        phases["launch_s"] += time.perf_counter() - tick
        gathering.append(collector.submit(gather, list(batch), pending, samples, shard_skips))
        batch.clear()
        tick = time.perf_counter()
        while len(gathering) > BATCHES_IN_FLIGHT:
            gathering.popleft().result()  # the device (or the collector) is behind; raises what gather raised
        phases["model_s"] += time.perf_counter() - tick

    def finish_shard():
        nonlocal samples, shard_skips
        if current_shard >= 0:
            flush_batch()
            gathering.append(collector.submit(close, current_shard, samples, shard_skips))
            samples, shard_skips = [], Counter()

    start, captured_before = time.perf_counter(), extractor.capture_seconds
    stream = read_frame_sets(args.bags, args.camera_topics, args.instruction_topic, counts,
                             instruction=args.instruction, sync_slop_s=args.sync_slop_s)  # fmt: skip
    mine = (fs for fs in stream  # skip another rank's shards, and shards finished by an earlier run
            if (fs.index // size) % world == rank and not (out / shard_name(fs.index // size)).exists())  # fmt: skip
    workers = args.workers or min(8, os.cpu_count() or 1)
    if extractor.device.type == "cuda":
        # Parallelism comes from the worker threads; one intra-op thread each keeps OpenMP teams from
        # oversubscribing the cores and starving the thread that launches the GPU work.
        torch.set_num_threads(1)
    tick = time.perf_counter()
    for item in prefetch(lambda fs: prepare(extractor.processor, fs), mine, workers, depth=2 * args.batch_size + 8):
        phases["inputs_s"] += time.perf_counter() - tick
        shard = item.frame_set.index // size
        if shard != current_shard:
            finish_shard()
            current_shard = shard
        batch.append(item)
        if len(batch) >= args.batch_size:
            flush_batch()
        tick = time.perf_counter()
    finish_shard()
    tick = time.perf_counter()
    while gathering:
        gathering.popleft().result()
    collector.shutdown()
    for write in writes:
        write.result()  # raises if a shard could not be written
    writer.shutdown()
    phases["write_wait_s"] += time.perf_counter() - tick
    progress.update(0, final=True)
    barrier(world)
    seconds = time.perf_counter() - start  # reading, decoding, preprocessing, model, writing; not loading
    frames = progress.done
    if world > 1:  # all ranks' frames over the slowest rank's time
        import torch.distributed as dist

        totals = torch.tensor([float(frames), seconds], dtype=torch.float64)
        frames_t, seconds_t = totals[:1].clone(), totals[1:].clone()
        dist.all_reduce(frames_t)
        dist.all_reduce(seconds_t, op=dist.ReduceOp.MAX)
        frames, seconds = int(frames_t.item()), seconds_t.item()
    if rank != 0:
        return {}
    manifest = write_manifest(out, args, extractor, counts, teacher_hash.result())
    hasher.shutdown()
    phases["graph_capture_s"] = extractor.capture_seconds - captured_before  # shapes first seen during the run
    manifest["timing"] = {"seconds": seconds, "frame_sets": frames, "processes": world,
                          "frame_sets_per_s": frames / seconds if seconds else 0.0,
                          **{k: round(v, 3) for k, v in phases.items()}}  # fmt: skip
    if args.out_bag:
        from .feature_bag import write_feature_bag

        write_feature_bag(out, args.out_bag, args.bags, args.camera_topics, args.instruction_topic)
        manifest["out_bag"] = str(args.out_bag)
    return manifest


@dataclass
class Prepared:
    frame_set: RecordedFrameSet
    prompt: tuple | None = None  # (ids, layout)
    frames: list[torch.Tensor] | None = None  # C decoded (H, W, 3) uint8 frames on the host
    skip_reason: str | None = None


def prepare(processor, frame_set: RecordedFrameSet) -> Prepared:
    """Decode and check one frame set on the host (in a worker thread); the resize happens with the batch's,
    on the model's device, as in the node."""
    try:
        images = frame_set.decode()
        prompt = processor.encode(len(images), frame_set.instruction)
        return Prepared(frame_set, prompt, processor.host_frames(images))
    except BadImage as err:
        return Prepared(frame_set, skip_reason=err.reason)
    except ValueError as err:  # an image the processor refuses, or an unusable instruction
        log.warning("frame set %d skipped: %s", frame_set.index, err)
        return Prepared(frame_set, skip_reason="bad_input")


def prefetch(fn, items: Iterator, workers: int, depth: int) -> Iterator:
    """``fn(item)`` for each item, in input order, computed by a thread pool up to ``depth`` items ahead. The
    items are drawn (the bag reading) on a feeder thread, off the thread that queues the GPU work."""
    futures: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                futures.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    with ThreadPoolExecutor(max_workers=workers) as pool:

        def feed() -> None:
            try:
                for item in items:
                    if not put(pool.submit(fn, item)):
                        return
            except Exception as err:  # noqa: BLE001 - raised again on the consuming thread
                put(err)
            put(None)

        feeder = threading.Thread(target=feed, name="extract-reader", daemon=True)
        feeder.start()
        try:
            while (entry := futures.get()) is not None:
                if isinstance(entry, Exception):
                    raise entry
                yield entry.result()
        finally:
            stop.set()
            feeder.join()


@dataclass
class InFlight:
    """A batch whose model call is queued on the device; its results are copied back asynchronously."""

    kept: list[Prepared]
    frames: torch.Tensor  # (B, C, 3, 224, 224) uint8, the model's input frames, on the CPU once ``done`` has fired
    features: torch.Tensor  # (B, L, D) float16, on the CPU once ``done`` has fired
    finite: torch.Tensor  # (B,) bool, likewise
    done: torch.cuda.Event | None = None

    def samples(self, skipped: Counter) -> list[Sample]:
        """Wait for the copies, then one Sample per finite row (non-finite rows are counted)."""
        if self.done is not None:
            self.done.synchronize()
        samples = []
        for row, item in enumerate(self.kept):
            if not self.finite[row]:
                skipped["nonfinite_features"] += 1
                continue
            frame_set, (ids, layout) = item.frame_set, item.prompt
            source = {"bag": frame_set.bag, "topics": [f.topic for f in frame_set.frames],
                      "frame_id": frame_set.frame_id(), "instruction": frame_set.instruction}  # fmt: skip
            features = self.features[row, : layout.seq_len].clone()  # own memory: the batch's buffers are pinned
            samples.append(Sample(frame_set.index, self.frames[row].clone(), list(ids), layout, features,
                                  frame_set.stamp_ns, source))  # fmt: skip
        return samples


def launch(extractor: FeatureExtractor, prepared: list[Prepared], batch_size: int, copy_stream=None) -> InFlight | None:
    """Queue the teacher on the good frame sets of a batch, and the copies of its results to pinned host
    memory on ``copy_stream`` (so they overlap the next batch's compute); returns at once on CUDA, so the
    host prepares the next batch while the device computes this one. A short batch (a shard's last, or one
    with skipped frame sets) is filled up to ``batch_size`` with copies of its last frame set, whose results
    are dropped: every call has the warmed-up shape, so no batch recompiles or captures a graph mid-run."""
    kept = [item for item in prepared if not item.skip_reason]
    if not kept:
        return None
    rows, filled = len(kept), kept + [kept[-1]] * (batch_size - len(kept))
    device, processor = extractor.device, extractor.processor
    images = processor.resize_frames([frame for item in filled for frame in item.frames], device)  # (B*C, 3, 224, 224)
    result = extractor.forward(processor.collate([item.prompt for item in filled], images, device))
    features = result.features[:rows].to(torch.float16)  # (rows, L, D)
    finite = torch.isfinite(features).flatten(1).all(dim=1)  # (rows,), checked on the device
    outputs = (images.view(len(filled), -1, *images.shape[1:])[:rows], features, finite)
    if device.type != "cuda":
        return InFlight(kept, *outputs)  # (B, C, 3, 224, 224) uint8, (B, L, D) float16, (B,) bool
    copy_stream.wait_stream(torch.cuda.current_stream(device))
    host = [torch.empty(out.shape, dtype=out.dtype, pin_memory=True) for out in outputs]
    with torch.cuda.stream(copy_stream):
        for target, out in zip(host, outputs):
            target.copy_(out, non_blocking=True)
            out.record_stream(copy_stream)  # not reused by the compute stream before the copy has read it
        done = torch.cuda.Event()
        done.record(copy_stream)
    return InFlight(kept, *host, done)


def write_manifest(out: Path, args, extractor: FeatureExtractor, counts: Counter, teacher_hash: str) -> dict:
    shards, skipped, total = [], Counter({k: v for k, v in counts.items() if v}), 0
    for path in sorted(out.glob("shard-*.safetensors")):
        count, shard_skips = read_shard_info(path)
        skipped.update(shard_skips)
        shards.append({"file": path.name, "num_samples": count})
        total += count
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
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / MANIFEST)
    return manifest
