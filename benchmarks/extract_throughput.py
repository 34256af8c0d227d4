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
from groot_sage_ros.cli import build_parser
from groot_sage_ros.engine import FeatureExtractor
from groot_sage_ros.offline.extract import run_extract
from groot_sage_ros.offline.make_bag import make_bag


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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    bag = work / "arc_bag"
    summary = make_bag(build_parser().parse_args(["make-bag", "--out", str(bag), "--arc", "--limit", str(args.arc_tasks)]))
    extractor = FeatureExtractor.from_pretrained(args.checkpoint, device=args.device, dtype=args.dtype)
    report = {"frames": summary["frames"] * args.repeat_bag, "frame_size": "480x240 rgb8 (ARC renders)", "runs": []}
    for batch in args.batches:
        argv = ["extract", *[str(bag)] * args.repeat_bag, "--checkpoint", args.checkpoint, "--camera-topics", "/camera/image_raw",
                "--out", str(work / f"ds{batch}"), "--device", args.device, "--dtype", args.dtype,
                "--batch-size", str(batch), "--shard-size", "1024"]  # fmt: skip
        if args.profile and batch == max(args.batches):
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            manifest = profiler.runcall(run_extract, build_parser().parse_args(argv))
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
        else:
            manifest = run_extract(build_parser().parse_args(argv))
        model = throughput(extractor, batch, cameras=1, iters=max(5, 200 // batch), warmup=3, compare_eager=False)
        timing = manifest["timing"]
        run = {"batch": batch, "extract_frames_per_s": timing["frame_sets_per_s"],
               "extract_frames_per_s_without_graph_captures":
                   timing["frame_sets"] / (timing["seconds"] - timing["graph_capture_s"]),
               "model_alone_frames_per_s": model["throughput_fps"], "samples": manifest["num_samples"],
               "phases": timing}  # fmt: skip
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
