"""Batch-1 latency and peak GPU memory of student + the teacher's action head against teacher + head.

Each pipeline in a fresh engine (the fast paths of both: the student's CUDA graph, the teacher's compiled
layers and graphs, the head's graphs): one 640x480 camera and an instruction, features then a 4-step chunk,
synchronised around every call. Prints JSON; ``--out`` writes it.

    python benchmarks/student_head_latency.py --student run/student.safetensors --teacher CKPT --device cuda
"""

from __future__ import annotations

import argparse
import gc
import json

import numpy as np
import torch

from groot_sage_ros.bench import timed as bench_timed
from groot_sage_ros.engine import RuntimeConfig, load_action_head, load_engine


def timed(fn, device: torch.device, iters: int) -> dict:
    """``bench.timed``'s median and p95 after 5 warm-up calls, and the peak memory while timing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    report = bench_timed("", fn, iters, 5, device)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return {"ms_median": report["_ms_median"], "ms_p95": report["_ms_p95"], "peak_allocated_gb": peak}


def pipeline(features_engine, head_engine, frame_set, device: torch.device, iters: int) -> dict:
    policy = head_engine.action_policy(None)
    state = policy.zero_state()
    inputs = features_engine.prepare([frame_set])
    report = {"features": timed(lambda: features_engine.forward(inputs), device, iters)}
    result = features_engine.forward(inputs)
    report["head"] = timed(lambda: policy.chunk(result, state, seed=0), device, iters)
    report["full"] = timed(lambda: policy.chunk(features_engine.forward(inputs), state, seed=0), device, iters)
    return report


def features_alone(engine, frame_set, device: torch.device, iters: int) -> dict:
    inputs = engine.prepare([frame_set])
    return timed(lambda: engine.forward(inputs), device, iters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True)
    parser.add_argument(
        "--teacher",
        required=True,
        help="checkpoint with the action head (and a one-embodiment statistics file, as tiny-checkpoint writes)",
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument(
        "--student-compile",
        default="auto",
        choices=("auto", "off"),
        help="the student's blocks compiled on CUDA (auto, as served) or eager; both with the CUDA graph",
    )
    parser.add_argument(
        "--student-only", action="store_true", help="the student's features alone (no head, no teacher)"
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device(args.device)
    frame_set = ([np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)], "pick up the cube")
    report = {"device": args.device, "dtype": args.dtype, "student_compile": args.student_compile}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    runtime = RuntimeConfig(compile=args.student_compile)
    student = load_engine(args.student, device=args.device, dtype=args.dtype, runtime=runtime)
    student.warmup()
    if args.student_only:
        report["student_features"] = features_alone(student, frame_set, device, args.iters)
        report["student_parameters"] = student.parameter_count
        print(json.dumps(report, indent=2))
        if args.out:
            with open(args.out, "w") as handle:
                json.dump(report, handle, indent=2)
        return
    head = load_action_head(args.teacher, device=args.device, dtype=args.dtype)
    report["student_plus_head"] = pipeline(student, head, frame_set, device, args.iters)
    del student, head
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    teacher = load_engine(args.teacher, device=args.device, dtype=args.dtype, action_head=True)
    report["teacher_plus_head"] = pipeline(teacher, teacher, frame_set, device, args.iters)
    s, t = report["student_plus_head"], report["teacher_plus_head"]
    report["student_adds_ms"] = s["full"]["ms_median"] - t["head"]["ms_median"]
    if s["full"]["peak_allocated_gb"]:
        report["memory_ratio"] = s["full"]["peak_allocated_gb"] / t["full"]["peak_allocated_gb"]
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
