"""One GPU against two in one call: `extract` over >= 10,000 frame sets and `distill` for >= 1,000 steps.

    OUT=$OUT python benchmarks/two_gpu_scaling.py --out "$OUT/h200x2_scaling.json"

Run on nvidia-h200-x2 from the repository root with the offline wheels on PYTHONPATH (as speed_h100.sh).
The 400-task ARC bag (JPEG) is passed ``--repeat-bag`` times to extract. Each step runs under a watchdog
(``timeout``: SIGABRT, and with PYTHONFAULTHANDLER=1 every thread's stack) so a hang costs minutes and shows
where, and nothing it starts outlives it. Reports frame sets/s and samples/s (all ranks' work over the
slowest rank's time, from the commands' own timing), each rank's start (load, compile, capture), the
wall time of each command, and whether the outputs are identical: the shards' sha256 in both manifests,
and the loss curves.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "groot_sage_ros.cli"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
            "groot_sage_ros.cli"]  # fmt: skip


def run(name: str, argv: list[str], env: dict, limit_s: int, log_dir: Path) -> dict:
    """Run ``argv`` under ``timeout`` (SIGABRT at ``limit_s``, SIGKILL 10 s later); its log goes to log_dir."""
    start = time.monotonic()
    log = log_dir / f"{name}.log"
    with open(log, "w") as handle:
        code = subprocess.call(["timeout", "-s", "ABRT", "-k", "10", str(limit_s), *argv], env=env,
                               stdout=handle, stderr=subprocess.STDOUT)  # fmt: skip
    wall = time.monotonic() - start
    text = log.read_text()
    print(f"{name}: exit {code} in {wall:.1f} s", flush=True)
    if code != 0:
        print(text[-3000:], flush=True)
        raise SystemExit(f"{name} failed (exit {code}); log in {log}")
    return {"wall_s": round(wall, 1), "log": text}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/scaling")
    parser.add_argument("--arc-tasks", type=int, default=400)
    parser.add_argument("--repeat-bag", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--distill-batch", type=int, default=32)
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    logs = out.parent
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
           "NVSHMEM_DISABLE_NVLS": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    one_gpu = {**env, "CUDA_VISIBLE_DEVICES": "0"}
    checkpoint, bag = work / "full", work / "arc"
    report: dict = {"command": "python benchmarks/two_gpu_scaling.py " + " ".join(sys.argv[1:])}
    report["gpus"] = subprocess.run(["nvidia-smi", "--query-gpu=name,power.limit", "--format=csv,noheader"],
                                    capture_output=True, text=True).stdout.strip().splitlines()  # fmt: skip
    run("checkpoint", [*CLI, "tiny-checkpoint", "--full-size", "--out", str(checkpoint)], env, 300, logs)
    run("make_bag", [*CLI, "make-bag", "--out", str(bag), "--arc", "--limit", str(args.arc_tasks), "--compressed"],
        env, 300, logs)  # fmt: skip
    extract = ["extract", *[str(bag)] * args.repeat_bag, "--checkpoint", str(checkpoint), "--camera-topics",
               "/camera/image_raw/compressed", "--device", "cuda", "--batch-size", str(args.batch_size)]  # fmt: skip
    results = {}
    for name, prefix, environment in (("extract_1gpu", CLI, one_gpu), ("extract_2gpu", TORCHRUN, env)):
        folder = work / name
        done = run(name, [*prefix, *extract, "--out", str(folder)], environment, 420, logs)
        manifest = json.loads((folder / "manifest.json").read_text())
        results[name] = {"wall_s": done["wall_s"], **manifest["timing"], "samples": manifest["num_samples"],
                         "shard_sha256": [s["sha256"] for s in manifest["shards"]]}  # fmt: skip
    one, two = results["extract_1gpu"], results["extract_2gpu"]
    report["extract"] = {
        "frame_sets": one["frame_sets"],
        "identical_shards": one.pop("shard_sha256") == two.pop("shard_sha256"),
        "one_gpu": one, "two_gpus": two,
        "speedup": two["frame_sets_per_s"] / one["frame_sets_per_s"],
        "speedup_wall": one["wall_s"] / two["wall_s"],
    }  # fmt: skip
    print(json.dumps(report["extract"], indent=2), flush=True)
    distill = ["distill", str(work / "extract_1gpu"), "--device", "cuda", "--max-steps", str(args.steps),
               "--batch-size", str(args.distill_batch), "--eval-every", str(args.steps), "--save-every",
               str(args.steps), "--log-every", "100"]  # fmt: skip
    losses = {}
    for name, prefix, environment in (("distill_1gpu", CLI, one_gpu), ("distill_2gpu", TORCHRUN, env)):
        folder = work / name
        done = run(name, [*prefix, *distill, "--out", str(folder)], environment, 540, logs)
        line = re.search(r"throughput: ([\d.]+) samples/s", done["log"])
        timing = json.loads((folder / "timing.json").read_text()) if (folder / "timing.json").exists() else {}
        results[name] = {"wall_s": done["wall_s"], "samples_per_s": float(line.group(1)) if line else None, **timing}
        losses[name] = [json.loads(row)["loss"] for row in (folder / "metrics.jsonl").read_text().splitlines()]
    one, two = results["distill_1gpu"], results["distill_2gpu"]
    rel = max(abs(a - b) / max(abs(a), 1e-9) for a, b in zip(losses["distill_1gpu"], losses["distill_2gpu"]))
    report["distill"] = {
        "steps": args.steps, "global_batch": args.distill_batch, "one_gpu": one, "two_gpus": two,
        "speedup": two["samples_per_s"] / one["samples_per_s"], "speedup_wall": one["wall_s"] / two["wall_s"],
        "loss_max_rel_diff": rel, "loss_last": [losses["distill_1gpu"][-1], losses["distill_2gpu"][-1]],
    }  # fmt: skip
    print(json.dumps(report["distill"], indent=2), flush=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
