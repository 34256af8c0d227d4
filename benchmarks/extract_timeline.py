"""When the GPU waits during ``groot-sage extract``, and what each thread was doing then.

Runs one extract under torch.profiler with the pipeline's steps labelled (record_function, patched in here,
not in the package), exports the Chrome trace and summarises it: time per label per thread, the GPU's busy
time over the run, and the longest gaps between kernels with the labels that were open on each thread.

    python benchmarks/extract_timeline.py --checkpoint CKPT --batch 64 --arc-tasks 400 --repeat-bag 2 --out t.txt
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from groot_sage_ros.cli import build_parser
from groot_sage_ros.engine import FeatureExtractor
from groot_sage_ros.offline import pipeline
from groot_sage_ros.offline.extract import run_extract
from groot_sage_ros.processor import Processor

from extract_throughput import arc_bag, extract_argv  # benchmarks/, the script's folder, is on sys.path

LABELLED = [(pipeline, "launch"), (pipeline.ShardPipeline, "_flush"), (pipeline.InFlight, "samples"),
            (pipeline, "write_shard"), (pipeline, "prepare"), (Processor, "resize_frames"), (Processor, "collate"),
            (FeatureExtractor, "forward")]  # fmt: skip


def label(owner, name: str) -> None:
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def labelled(*args, **kwargs):
        with record_function(f"x.{name}"):
            return fn(*args, **kwargs)

    setattr(owner, name, labelled)


def merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def summarise(trace: dict) -> list[str]:
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    kernels = merged([(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "kernel"])
    labels = [e for e in events if e.get("cat") == "user_annotation" and e["name"].startswith("x.")]
    launches = [e for e in labels if e["name"] == "x.launch"]
    if not launches or not kernels:
        return ["no labelled launches or no kernels in the trace"]
    start = min(e["ts"] for e in launches)
    end = max(b for _, b in kernels)
    busy = sum(min(b, end) - max(a, start) for a, b in kernels if b > start)
    lines = [f"window {(end - start) / 1e6:.2f} s from the first launch to the last kernel; kernels busy "
             f"{busy / 1e6:.2f} s ({100 * busy / (end - start):.0f}%)"]  # fmt: skip
    per_thread: dict = defaultdict(lambda: defaultdict(float))
    for e in labels:
        per_thread[e["tid"]][e["name"]] += e["dur"] / 1e6
    for tid, totals in per_thread.items():
        lines.append(f"thread {tid}: " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(totals.items())))
    gaps = [(b_start - a_end, a_end, b_start) for (_, a_end), (b_start, _) in zip(kernels, kernels[1:])
            if a_end >= start]  # fmt: skip
    gaps.sort(reverse=True)
    idle = sum(g for g, _, _ in gaps)
    lines.append(f"gaps between kernels after the first launch: {idle / 1e6:.2f} s in {len(gaps)} gaps; "
                 f"over 1 ms: {sum(g for g, _, _ in gaps if g > 1000) / 1e6:.2f} s")  # fmt: skip
    runtime = [e for e in events if e.get("cat") == "cuda_runtime"]
    for gap, a, b in gaps[:12]:
        open_labels = sorted({f"{e['tid']}:{e['name']}" for e in labels if e["ts"] < b and e["ts"] + e["dur"] > a})
        calls = sorted({e["name"] for e in runtime if e["ts"] < b and e["ts"] + e["dur"] > a and e["dur"] > 500})
        lines.append(f"  gap {gap / 1e3:.1f} ms at +{(a - start) / 1e6:.2f} s: {open_labels}; long runtime calls {calls}")
        ops = sorted((e for e in events if e.get("cat") == "cpu_op" and e["dur"] > 2000 and e["ts"] < b
                      and e["ts"] + e["dur"] > a), key=lambda e: e["ts"])  # fmt: skip
        for e in ops[:8]:
            lines.append(f"      thread {e['tid']} {e['name']} {e['dur'] / 1e3:.1f} ms from +{(e['ts'] - a) / 1e3:.1f} ms")
    slow_calls: dict = defaultdict(lambda: [0, 0.0])
    for e in runtime:
        slow_calls[e["name"]][0] += 1
        slow_calls[e["name"]][1] += e["dur"] / 1e6
    lines.append("runtime calls by total time: " + ", ".join(
        f"{name} {n}x {t:.2f} s" for name, (n, t) in sorted(slow_calls.items(), key=lambda kv: -kv[1][1])[:8]))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--arc-tasks", type=int, default=400)
    parser.add_argument("--repeat-bag", type=int, default=2)
    parser.add_argument("--out", required=True)
    parser.add_argument("--trace", help="also keep the Chrome trace here (gzip)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    bag, _ = arc_bag(work, args.arc_tasks)
    # a first run puts the kernels in the compile cache before the profiled one
    run_extract(build_parser().parse_args(extract_argv(args, bag, work / "warm", args.batch)))
    for owner, name in LABELLED:
        label(owner, name)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        manifest = run_extract(build_parser().parse_args(extract_argv(args, bag, work / "ds", args.batch)))
    trace_path = work / "trace.json"
    prof.export_chrome_trace(str(trace_path))
    if args.trace:
        import gzip
        import shutil

        with open(trace_path, "rb") as src, gzip.open(args.trace, "wb") as dst:
            shutil.copyfileobj(src, dst)
    lines = [json.dumps(manifest["timing"]), *summarise(json.loads(trace_path.read_text()))]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)
    if torch.cuda.is_available():
        print(torch.cuda.get_device_name())


if __name__ == "__main__":
    main()
