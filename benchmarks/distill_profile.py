"""Where a distill step's time goes: the real training loop (``StudentTraining``) on a dataset, per arm
(``features``: MSE + cosine; ``both``: + the action objective through the teacher's head; ``both8``: the
action term on 8 samples of each batch), in a fresh run folder each:

- the pace over ``--steps`` steps after ``--warmup`` (compilation and graph captures), and the time the
  loop waited for its loader threads;
- a ``torch.profiler`` window of ``--profile-steps`` steps: wall time, GPU kernel time, kernels and the
  host's launch calls per step (kernel time well below wall time: the host, not arithmetic, sets the pace;
  kernels far above launch calls: CUDA graphs replay them), the step's phases (``distill/...`` labels of
  ``StudentTraining.step``, host time) and the top operators by GPU and by host time.

    python benchmarks/distill_profile.py --dataset FEATURES --teacher CKPT --device cuda --arms features both \\
        --out distill_profile_h100.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType

from groot_sage_ros.engine.runtime import resolve_device
from groot_sage_ros.offline.config import DistillConfig
from groot_sage_ros.offline.distill import claim_run_folder
from groot_sage_ros.offline.training import StudentTraining

ARMS = {
    "features": {},
    "both": {"action_weight": 1.0},
    "both8": {"action_weight": 1.0, "action_samples_per_step": 8},
}
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx", "cudaGraphLaunch")


def device_time(event) -> float:
    """An event's own GPU time in microseconds (the attribute's name changed across PyTorch releases)."""
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)


def run_steps(run: StudentTraining, batches, first: int, count: int) -> tuple[float, float]:
    """``count`` steps as the loop runs them (a wait for the GPU after each); (seconds, loader wait seconds)."""
    wait, start = 0.0, time.monotonic()
    for step in range(first, first + count):
        tick = time.monotonic()
        data = next(batches)
        wait += time.monotonic() - tick
        logged = run.step(step, data)
        run.check_finite(step, data, logged)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    return time.monotonic() - start, wait


def profile_arm(args, arm: str, root: Path) -> dict:
    device = resolve_device(args.device)
    total = args.warmup + args.steps + args.profile_steps
    config = DistillConfig(
        dataset=args.dataset,
        out=str(root / arm),
        device=args.device,
        max_steps=total,
        batch_size=args.batch_size,
        eval_every=total,
        save_every=total,
        log_every=total,
        teacher=args.teacher,
        **ARMS[arm],
    )
    folder = claim_run_folder(config, Path(config.out), 1, device)
    report: dict = {"options": ARMS[arm]}
    try:
        setup = time.monotonic()
        run = StudentTraining.start(config, Path(config.out), 0, 1, device)
        report["setup_s"] = round(time.monotonic() - setup, 2)
        batches = run.batches()
        try:
            seconds, _ = run_steps(run, batches, 0, args.warmup)
            report["warmup_s"] = round(seconds, 2)
            seconds, wait = run_steps(run, batches, args.warmup, args.steps)
            report["steps_per_s"] = round(args.steps / seconds, 2)
            report["loader_wait_ms_per_step"] = round(1e3 * wait / args.steps, 2)
            activities = [torch.profiler.ProfilerActivity.CPU]
            if device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=activities) as prof:
                seconds, _ = run_steps(run, batches, args.warmup + args.steps, args.profile_steps)
        finally:
            batches.close()
        run.close()
    finally:
        folder.release()
    n = args.profile_steps
    events, averages = prof.events(), prof.key_averages()
    kernels = [e for e in events if e.device_type != DeviceType.CPU and not is_label(e.name)]
    report["profile"] = {
        "wall_ms_per_step": round(1e3 * seconds / n, 2),
        "gpu_kernel_ms_per_step": round(sum(e.device_time for e in kernels) / 1e3 / n, 2),
        "kernels_per_step": round(len(kernels) / n, 1),
        "host_launch_calls_per_step": round(sum(e.count for e in averages if e.key in LAUNCHES) / n, 1),
        "phases_host_ms_per_step": phases(events, n),
        "top_gpu_ms_per_step": top([e for e in averages if not is_label(e.key)], device_time, n),
        "top_host_self_ms_per_step": top(averages, lambda e: e.self_cpu_time_total, n),
    }
    return report


def is_label(name: str) -> bool:
    return name.startswith(("distill/", "ProfilerStep"))


def phases(events, steps: int) -> dict:
    """Host time per step of each ``distill/...`` label (its span on the host, children included)."""
    totals: dict = {}
    for e in events:
        if e.device_type == DeviceType.CPU and e.name.startswith("distill/"):
            totals[e.name] = totals.get(e.name, 0.0) + e.cpu_time_total
    return {name: round(total / 1e3 / steps, 2) for name, total in totals.items()}


def top(events, key, steps: int, count: int = 15) -> dict:
    ranked = sorted(events, key=key, reverse=True)[:count]
    return {e.key[:80]: round(key(e) / 1e3 / steps, 3) for e in ranked if key(e) > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a dataset folder written by extract")
    parser.add_argument("--teacher", help="the checkpoint whose head the action arms use (default: the dataset's)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arms", nargs="+", default=["features", "both"], choices=sorted(ARMS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=30, help="steps before timing (compilation, graph captures)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps")
    parser.add_argument("--profile-steps", type=int, default=10, help="steps under the profiler")
    parser.add_argument("--out", help="JSON to write")
    args = parser.parse_args()
    report: dict = {
        "command": "python benchmarks/distill_profile.py --arms " + " ".join(args.arms),
        "batch_size": args.batch_size,
    }
    if resolve_device(args.device).type == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory() as root:
        report["arms"] = {arm: profile_arm(args, arm, Path(root)) for arm in args.arms}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
