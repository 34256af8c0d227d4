"""``groot-sage extract`` throughput: frame sets per second with bag reading, decoding, preprocessing and
shard writing included, at several batch sizes, next to the model alone at the same batch size.

    python benchmarks/extract_throughput.py --checkpoint CKPT --device cuda --batches 1 8 32 64 --out x.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from groot_sage_ros.bench import throughput
from groot_sage_ros.cli import parse_config
from groot_sage_ros.engine import load_engine
from groot_sage_ros.offline.extract import run_extract
from groot_sage_ros.offline.make_bag import make_bag


def arc_bag(work: Path, tasks: int) -> tuple[Path, dict]:
    """An ARC-AGI bag of ``tasks`` tasks (raw 480x240 frames on /camera/image_raw) in ``work``, and its summary."""
    bag = work / "arc_bag"
    return bag, make_bag(parse_config(["make-bag", "--out", str(bag), "--arc", "--limit", str(tasks)]))


def extract_argv(args, bag: Path, out: Path, batch: int) -> list[str]:
    """``groot-sage extract`` over ``bag`` passed ``args.repeat_bag`` times, at ``batch``, shards of 1,024."""
    return [
        "extract",
        *[str(bag)] * args.repeat_bag,
        "--checkpoint",
        args.checkpoint,
        "--camera-topics",
        "/camera/image_raw",
        "--out",
        str(out),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--batch-size",
        str(batch),
        "--shard-size",
        "1024",
    ]


def torch_profiled(run, args, path: str) -> dict:
    """``run(args)`` under torch.profiler: the runtime calls that block the host (graph launches, copies,
    pinned allocations) by CPU time, and the kernels' total GPU time against the wall time."""
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile

    tick = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        manifest = run(args)
    wall = time.perf_counter() - tick
    events = prof.key_averages()
    gpu_us = sum(event.self_device_time_total for event in events)
    lines = [
        f"wall {wall:.2f} s, GPU busy (sum of kernel and copy times) {gpu_us / 1e6:.2f} s",
        events.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=70),
        events.table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=70),
    ]
    if torch.cuda.is_available():
        stats = torch.cuda.memory_stats()
        lines.append(
            f"allocator: {stats.get('num_alloc_retries')} allocation retries, "
            f"{stats.get('num_sync_all_streams')} syncs of all streams, {stats.get('num_device_alloc')} cudaMallocs"
        )
    Path(path).write_text("\n".join(lines))
    print(lines[0], flush=True)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--arc-tasks", type=int, default=150, help="ARC tasks in the bag (about 3.3 frames each)")
    parser.add_argument("--repeat-bag", type=int, default=1, help="pass the bag this many times (more frames)")
    parser.add_argument("--out")
    parser.add_argument("--profile", action="store_true", help="print where the largest batch's extract spends time")
    parser.add_argument(
        "--torch-profile",
        metavar="FILE",
        help="write the largest batch's CPU and CUDA activity table (torch.profiler) to FILE",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    bag, summary = arc_bag(work, args.arc_tasks)
    engine = load_engine(args.checkpoint, device=args.device, dtype=args.dtype)
    report = {"frames": summary["frames"] * args.repeat_bag, "frame_size": "480x240 rgb8 (ARC renders)", "runs": []}
    for batch in args.batches:
        argv = extract_argv(args, bag, work / f"ds{batch}", batch)
        if args.profile and batch == max(args.batches):
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            manifest = profiler.runcall(run_extract, parse_config(argv))
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
        elif args.torch_profile and batch == max(args.batches):
            manifest = torch_profiled(run_extract, parse_config(argv), args.torch_profile)
        else:
            manifest = run_extract(parse_config(argv))
        model = throughput(engine, batch, cameras=1, iters=max(5, 200 // batch), warmup=3, compare_eager=False)
        timing = manifest["timing"]
        run = {
            "batch": batch,
            "extract_frames_per_s": timing["frame_sets_per_s"],
            "extract_frames_per_s_without_graph_captures": timing["frame_sets"]
            / (timing["seconds"] - timing["graph_capture_s"]),
            # the last shard's write (about 1.4 GB at the default shard size) is a fixed cost at the end
            "extract_frames_per_s_without_captures_and_final_write": timing["frame_sets"]
            / (timing["seconds"] - timing["graph_capture_s"] - timing["write_wait_s"]),
            "model_alone_frames_per_s": model["throughput_fps"],
            "samples": manifest["num_samples"],
            "phases": timing,
        }
        shutil.rmtree(work / f"ds{batch}")  # about 1.35 MB a sample at full size: runs would fill the disk
        print(json.dumps(run), flush=True)
        report["runs"].append(run)
    import torch

    report["device"] = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    report["torch"] = torch.__version__
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
