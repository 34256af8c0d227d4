"""One GPU against two in one call: `extract` over >= 10,000 frame sets and `distill` for >= 1,000 steps.

    OUT=$OUT python benchmarks/archive/two_gpu_scaling.py --out "$OUT/h200x2_scaling.json"

Run on nvidia-h200-x2 from the repository root with the offline wheels on PYTHONPATH (as speed_h100.sh).
The 400-task ARC bag (JPEG) is passed ``--repeat-bag`` times to extract; distill runs at each of
``--distill-batches`` (global batch: the same for one GPU and two, so the loss curves must agree). Each step runs under a watchdog
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
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "groot_sage_ros.cli"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
            "groot_sage_ros.cli"]


def run(name: str, argv: list[str], env: dict, limit_s: int, log_dir: Path) -> dict:
    """Run ``argv`` under ``timeout`` (SIGABRT at ``limit_s``, SIGKILL 10 s later); its log goes to log_dir."""
    start = time.monotonic()
    log = log_dir / f"{name}.log"
    with open(log, "w") as handle:
        code = subprocess.call(["timeout", "-s", "ABRT", "-k", "10", str(limit_s), *argv], env=env,
                               stdout=handle, stderr=subprocess.STDOUT)
    wall = time.monotonic() - start
    text = log.read_text()
    with open(log_dir / "steps.log", "a") as handle:  # one file for all steps (the device returns 8 files)
        handle.write(f"===== {name}: exit {code} in {wall:.1f} s\n{text}\n")
    log.unlink()
    print(f"{name}: exit {code} in {wall:.1f} s", flush=True)
    if code != 0:
        print(text[-3000:], flush=True)
        raise SystemExit(f"{name} failed (exit {code}); log in {log}")
    return {"wall_s": round(wall, 1), "log": text}


def compare_shards(a: Path, b: Path, every: int = 4) -> dict:
    """Every ``every``-th shard of two datasets compared by content: each tensor's largest difference and
    the metadata (sources, layouts, skipped counts); the ones that differ are listed."""
    from safetensors import safe_open

    shards_a = json.loads((a / "manifest.json").read_text())["shards"]
    shards_b = {s["file"]: s for s in json.loads((b / "manifest.json").read_text())["shards"]}
    compared, differing = 0, []
    for shard in shards_a[::every]:
        compared += 1
        if shards_b[shard["file"]]["sha256"] == shard["sha256"]:
            continue  # the same bytes
        with safe_open(str(a / shard["file"]), "pt") as x, safe_open(str(b / shard["file"]), "pt") as y:
            worst = {k: float((x.get_tensor(k).double() - y.get_tensor(k).double()).abs().max()) for k in x.keys()}
            if any(worst.values()) or x.metadata() != y.metadata():
                differing.append({"file": shard["file"], "max_abs_diff": worst, "metadata_equal": x.metadata() == y.metadata()})
    # The file bytes may differ with equal contents: safetensors writes the header's metadata map in an
    # order of its own (a hash map), so two runs' shards need not be byte-identical.
    return {"shards": len(shards_a), "compared": compared, "differing_contents": differing}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/scaling")
    parser.add_argument("--arc-tasks", type=int, default=400)
    parser.add_argument("--repeat-bag", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--distill-batches", type=int, nargs="+", default=[32, 128])
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    logs = out.parent
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
           "NVSHMEM_DISABLE_NVLS": "1", "PYTHONUNBUFFERED": "1"}
    one_gpu = {**env, "CUDA_VISIBLE_DEVICES": "0"}
    checkpoint, bag = work / "full", work / "arc"
    report: dict = {"command": "python benchmarks/archive/two_gpu_scaling.py " + " ".join(sys.argv[1:])}
    report["gpus"] = subprocess.run(["nvidia-smi", "--query-gpu=name,power.limit", "--format=csv,noheader"],
                                    capture_output=True, text=True).stdout.strip().splitlines()
    run("checkpoint", [*CLI, "tiny-checkpoint", "--full-size", "--out", str(checkpoint)], env, 300, logs)
    run("make_bag", [*CLI, "make-bag", "--out", str(bag), "--arc", "--limit", str(args.arc_tasks), "--compressed"],
        env, 300, logs)
    extract = ["extract", *[str(bag)] * args.repeat_bag, "--checkpoint", str(checkpoint), "--camera-topics",
               "/camera/image_raw/compressed", "--device", "cuda", "--batch-size", str(args.batch_size),
               "--shard-size", str(args.shard_size)]
    # Not measured: fills the compiled-kernel cache (every prompt-length bucket of the bag), so that neither
    # measured run pays a cold compile inside its timing.
    warm = ["extract", str(bag), *extract[1 + args.repeat_bag :]]
    run("extract_warm_cache", [*CLI, *warm, "--out", str(work / "warm")], one_gpu, 300, logs)
    results = {}
    for name, prefix, environment in (("extract_1gpu", CLI, one_gpu), ("extract_2gpu", TORCHRUN, env)):
        folder = work / name
        done = run(name, [*prefix, *extract, "--out", str(folder)], environment, 420, logs)
        manifest = json.loads((folder / "manifest.json").read_text())
        results[name] = {"wall_s": done["wall_s"], **manifest["timing"], "samples": manifest["num_samples"],
                         "shard_sha256": [s["sha256"] for s in manifest["shards"]]}
    one, two = results["extract_1gpu"], results["extract_2gpu"]
    report["extract"] = {
        "frame_sets": one["frame_sets"],
        "identical_shard_files": one.pop("shard_sha256") == two.pop("shard_sha256"),
        "contents": compare_shards(work / "extract_1gpu", work / "extract_2gpu"),
        "one_gpu": one, "two_gpus": two,
        "speedup": two["frame_sets_per_s"] / one["frame_sets_per_s"],
        "speedup_wall": one["wall_s"] / two["wall_s"],
    }
    print(json.dumps(report["extract"], indent=2), flush=True)
    out.write_text(json.dumps(report, indent=2) + "\n")  # what is done so far, should a later step fail
    report["distill"] = []
    for batch in args.distill_batches:
        distill = ["distill", str(work / "extract_1gpu"), "--device", "cuda", "--max-steps", str(args.steps),
                   "--batch-size", str(batch), "--eval-every", str(args.steps), "--save-every", str(args.steps),
                   "--log-every", "100"]
        losses = {}
        for name, prefix, environment in (("distill_1gpu", CLI, one_gpu), ("distill_2gpu", TORCHRUN, env)):
            folder = work / f"{name}_b{batch}"
            done = run(f"{name}_b{batch}", [*prefix, *distill, "--out", str(folder)], environment, 540, logs)
            timing = json.loads((folder / "timing.json").read_text())
            results[name] = {"wall_s": done["wall_s"], **timing}
            losses[name] = [json.loads(row)["loss"] for row in (folder / "metrics.jsonl").read_text().splitlines()]
        one, two = results["distill_1gpu"], results["distill_2gpu"]
        rel = max(abs(a - b) / max(abs(a), 1e-9) for a, b in zip(losses["distill_1gpu"], losses["distill_2gpu"]))
        report["distill"].append({
            "steps": args.steps, "global_batch": batch, "one_gpu": one, "two_gpus": two,
            "speedup": two["samples_per_s"] / one["samples_per_s"], "speedup_wall": one["wall_s"] / two["wall_s"],
            "loss_max_rel_diff": rel, "loss_last": [losses["distill_1gpu"][-1], losses["distill_2gpu"][-1]],
        })
        print(json.dumps(report["distill"][-1], indent=2), flush=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
