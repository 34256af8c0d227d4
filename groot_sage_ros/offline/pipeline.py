"""How ``extract`` keeps the GPU busy: prepared frame sets become batches, batches become shard files.

Four kinds of thread overlap. A feeder thread reads the bags and worker threads decode the frames
(``prefetch``, ``prepare``); the main thread pads a batch to one shape and queues it on the device
(``launch``); a collector thread waits for each batch's results and turns them into samples; writer
threads write the closed shards. The collector runs one task at a time, in submission order, so samples
reach their shard in stream order and a shard is written after its last batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..api import FeatureEngine
from ..serving.decoding import BadImage
from .dataset import Sample, shard_name, write_shard
from .frame_sets import RecordedFrameSet

log = logging.getLogger(__name__)

BATCHES_IN_FLIGHT = 3  # queued on the device or waiting for the collector; each holds pinned result buffers
WRITER_THREADS = 2  # one thread writes about 1,300 samples/s of 295x2048 features on the H100 machine


class ShardPipeline:
    """``add`` prepared frame sets in stream order, then ``finish``; shard k of ``shard_size`` frame sets
    lands in ``out`` as one file. ``phases`` holds the main thread's seconds: ``launch_s`` (queueing
    batches), ``model_s`` (waiting for the device or the collector), ``write_wait_s`` (the final drain);
    the caller adds ``inputs_s``. It also holds the other threads' busy seconds: ``collect_wait_s`` (the
    collector waiting for a batch's results), ``collect_s`` (turning them into samples) and ``write_s``
    (the writers, summed). ``digests`` maps each written shard's file name to its (bytes, sha256).

    A failed write (no space, permission, I/O) surfaces on the main thread at the next batch, not at the
    end: the run stops within one batch, and the shards already renamed into place are complete."""

    def __init__(
        self, engine: FeatureEngine, out: Path, batch_size: int, shard_size: int, progress, attention: bool = False
    ):
        self.engine, self.out, self.batch_size, self.shard_size = engine, out, batch_size, shard_size
        self.attention = attention  # also the teacher's attention to the image tokens (extract --attention)
        self.progress = progress
        self.phases: Counter = Counter()
        self.phases_lock = threading.Lock()
        self.collector = ThreadPoolExecutor(max_workers=1)
        self.writer = ThreadPoolExecutor(max_workers=WRITER_THREADS)
        self.write_slots = threading.Semaphore(2 * WRITER_THREADS)  # closed shards in memory, not yet written
        self.copy_stream = torch.cuda.Stream(engine.device) if engine.device.type == "cuda" else None
        self.gathering: deque = deque()  # collector futures, oldest first
        self.writes: list = []
        self.digests: dict[str, tuple[int, str]] = {}
        self.batch: list[Prepared] = []
        self.shard, self.samples, self.skips = -1, [], Counter()  # the open shard

    def add(self, item: Prepared) -> None:
        shard = item.frame_set.index // self.shard_size
        if shard != self.shard:
            self._close_shard()
            self.shard = shard
        self.batch.append(item)
        if len(self.batch) >= self.batch_size:
            self._flush()

    def finish(self) -> None:
        """Close the last shard and wait until every shard is written (raises what a write raised)."""
        self._close_shard()
        tick = time.perf_counter()
        while self.gathering:
            self.gathering.popleft().result()
        self.collector.shutdown()
        for write in self.writes:
            write.result()
        self.writer.shutdown()
        self.phases["write_wait_s"] += time.perf_counter() - tick

    def abort(self) -> None:
        """After an error: drop the queued work (a write in progress finishes or fails on its own)."""
        self.collector.shutdown(wait=False, cancel_futures=True)
        self.writer.shutdown(wait=False, cancel_futures=True)

    def _raise_failed_write(self) -> None:
        for write in self.writes:
            if write.done() and write.exception() is not None:
                raise write.exception()

    def _flush(self) -> None:
        self._raise_failed_write()
        tick = time.perf_counter()
        pending = launch(self.engine, self.batch, self.batch_size, self.copy_stream, self.attention)
        self.phases["launch_s"] += time.perf_counter() - tick
        self.gathering.append(self.collector.submit(self._gather, list(self.batch), pending, self.samples, self.skips))
        self.batch.clear()
        tick = time.perf_counter()
        while len(self.gathering) > BATCHES_IN_FLIGHT:
            self.gathering.popleft().result()  # the device (or the collector) is behind; raises what gather raised
        self.phases["model_s"] += time.perf_counter() - tick

    def _close_shard(self) -> None:
        if self.shard >= 0:
            self._flush()
            self.gathering.append(self.collector.submit(self._write, self.shard, self.samples, self.skips))
            self.samples, self.skips = [], Counter()

    def _gather(self, prepared: list[Prepared], pending: InFlight | None, samples: list, skips: Counter) -> None:
        """On the collector: count the batch's skipped frame sets, wait for its results, keep its samples."""
        for item in prepared:
            if item.skip_reason:
                skips[item.skip_reason] += 1
        if pending is not None:
            tick = time.perf_counter()
            pending.wait()
            tock = time.perf_counter()
            samples.extend(pending.samples(skips))
            self.phases["collect_wait_s"] += tock - tick
            self.phases["collect_s"] += time.perf_counter() - tock
        self.progress.update(len(prepared))

    def _write(self, shard: int, samples: list, skips: Counter) -> None:
        """On the collector, after the shard's last batch: hand the shard to a writer thread."""
        self.write_slots.acquire()  # back-pressure: the collector, then the main thread, wait for slow disks
        write = self.writer.submit(self._timed_write, self.out / shard_name(shard), samples, skips)
        write.add_done_callback(lambda _: self.write_slots.release())
        self.writes.append(write)

    def _timed_write(self, path: Path, samples: list, skips: Counter) -> None:
        tick = time.perf_counter()
        digest = write_shard(
            path, samples, skips, self.engine.feature_dim, self.engine.facts.pad_token_id, durable=False
        )  # synced before the manifest
        with self.phases_lock:  # two writer threads
            self.phases["write_s"] += time.perf_counter() - tick
            self.digests[path.name] = digest


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
    except Exception as err:  # noqa: BLE001 -- one frame set never ends the run; counted apart from bad input
        log.warning("frame set %d skipped after an unexpected error: %r", frame_set.index, err)
        return Prepared(frame_set, skip_reason="internal_error")


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
    frames: torch.Tensor  # (B, C, 3, S, S) uint8, the model's input frames, on the CPU once ``done`` has fired
    features: torch.Tensor  # (B, L, D) float16, on the CPU once ``done`` has fired
    finite: torch.Tensor  # (B,) bool, likewise
    attention: torch.Tensor | None = None  # (B, L, T) float16, likewise (extract --attention)
    done: torch.cuda.Event | None = None

    def wait(self) -> None:
        """Until the results are in host memory."""
        if self.done is not None:
            self.done.synchronize()

    def samples(self, skipped: Counter) -> list[Sample]:
        """One Sample per finite row (non-finite rows are counted), after ``wait``. The batch's pinned
        buffers are copied once, whole, to ordinary memory (pinned memory is scarce and slow to allocate, so
        it goes back at once); the samples are views of that copy, not 2 x B copies of their own."""
        finite = self.finite.tolist()  # one conversion, not a tensor index a row
        features, frames = self.features.clone(), self.frames.clone()  # (B, L, D), (B, C, 3, S, S)
        attention = self.attention.clone() if self.attention is not None else None  # (B, L, T)
        samples = []
        for row, item in enumerate(self.kept):
            if not finite[row]:
                skipped["nonfinite_features"] += 1
                continue
            frame_set, (ids, layout) = item.frame_set, item.prompt
            source = {
                "bag": frame_set.bag,
                "topics": [f.topic for f in frame_set.frames],
                "frame_id": frame_set.frame_id(),
                "instruction": frame_set.instruction,
            }
            samples.append(
                Sample(
                    frame_set.index,
                    frames[row],
                    ids,
                    layout,
                    features[row, : layout.seq_len],
                    frame_set.stamp_ns,
                    source,
                    attention[row, : layout.seq_len] if attention is not None else None,
                )
            )
        return samples


def launch(
    engine: FeatureEngine, prepared: list[Prepared], batch_size: int, copy_stream=None, attention: bool = False
) -> InFlight | None:
    """Queue the teacher on the good frame sets of a batch, and the copies of its results to pinned host
    memory on ``copy_stream`` (so they overlap the next batch's compute); returns at once on CUDA, so the
    host prepares the next batch while the device computes this one. A short batch (a shard's last, or one
    with skipped frame sets) is filled up to ``batch_size`` with copies of its last frame set, whose results
    are dropped: every call has the warmed-up shape, so no batch recompiles or captures a graph mid-run."""
    kept = [item for item in prepared if not item.skip_reason]
    if not kept:
        return None
    rows, filled = len(kept), kept + [kept[-1]] * (batch_size - len(kept))
    device, processor = engine.device, engine.processor
    images = processor.resize_frames([frame for item in filled for frame in item.frames], device)  # (B*C, 3, S, S)
    inputs = processor.collate([item.prompt for item in filled], images, device)
    result = engine.forward(inputs, image_attention=True) if attention else engine.forward(inputs)
    features = result.features[:rows].to(torch.float16)  # (rows, L, D)
    finite = torch.isfinite(features).flatten(1).all(dim=1)  # (rows,), checked on the device
    outputs = [images.view(len(filled), -1, *images.shape[1:])[:rows], features, finite]
    if attention:
        outputs.append(result.image_attention[:rows].to(torch.float16))  # (rows, L, T)
    if device.type != "cuda":
        return InFlight(kept, *outputs)  # (B, C, 3, S, S) uint8, (B, L, D) float16, (B,) bool, (B, L, T)
    copy_stream.wait_stream(torch.cuda.current_stream(device))
    host = [torch.empty(out.shape, dtype=out.dtype, pin_memory=True) for out in outputs]
    with torch.cuda.stream(copy_stream):
        for target, out in zip(host, outputs):
            target.copy_(out, non_blocking=True)
            out.record_stream(copy_stream)  # not reused by the compute stream before the copy has read it
        done = torch.cuda.Event()
        done.record(copy_stream)
    return InFlight(kept, *host[:3], attention=host[3] if attention else None, done=done)
