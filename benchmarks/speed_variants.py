"""Compare engine variants (compile mode, dynamic or static shapes, length bucket) on the full-size random
model, each in a fresh process with an empty kernel cache: batch-1 backbone, action head and full model,
and frames/s at a throughput batch, plus the compile time the variant costs.

    python benchmarks/speed_variants.py --out variants.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "dynamic_default": {},
    "static_default": {"dynamic_lengths": False},
    "static_max_autotune": {"dynamic_lengths": False, "compile_mode": "max-autotune-no-cudagraphs"},
    "dynamic_bucket8": {"length_bucket": 8},
    # inductor tunes its pointwise and reduction kernels' launch configs by coordinate descent
    "coordinate_descent": {"env": {"TORCHINDUCTOR_COORDINATE_DESCENT_TUNING": "1"}},
    # SDPA picks among flash and memory-efficient attention only (cuDNN's is first otherwise on an H100)
    "no_cudnn_attention": {"sdpa_cudnn": False},
    # inductor writes persistent and looped versions of each reduction and times both on first use
    "multi_kernel": {"env": {"TORCHINDUCTOR_MULTI_KERNEL": "1"}},
}


def measure(variant: dict, throughput_batch: int) -> dict:
    import torch

    from groot_sage_ros.bench import frame_sets, throughput, timed
    from groot_sage_ros.config import RuntimeConfig, n15_3b_config
    from groot_sage_ros.engine import FeatureExtractor

    variant = {key: value for key, value in variant.items() if key != "env"}  # env: set by main's subprocess
    torch.backends.cuda.enable_cudnn_sdp(variant.pop("sdpa_cudnn", True))
    runtime = RuntimeConfig(compile="on", compile_cache_dir=tempfile.mkdtemp(), **variant)
    start = time.perf_counter()
    fx = FeatureExtractor.from_random(n15_3b_config(), device="cuda", dtype="float16", action_head=True,
                                      runtime=runtime)  # fmt: skip
    report = {"start_s": time.perf_counter() - start}
    inputs = fx.prepare(frame_sets(1, 1))
    result = fx.forward(inputs)
    states = torch.zeros(1, fx.config.action_head.max_state_dim)

    def median(fn):
        return timed("call", fn, iters=50, warmup=5, device=fx.device)["call_ms_median"]

    report["backbone_ms"] = median(lambda: fx.forward(inputs))
    report["head_ms"] = median(lambda: fx.predict_actions(result, states, 31, seed=0))
    report["full_ms"] = median(lambda: fx.predict_actions(fx.forward(inputs), states, 31, seed=0))
    tick = time.perf_counter()
    fx.forward(fx.prepare(frame_sets(throughput_batch, 1)))
    torch.cuda.synchronize()
    report["first_big_batch_s"] = time.perf_counter() - tick
    report["throughput_fps"] = throughput(fx, throughput_batch, 1, iters=10, warmup=5, compare_eager=False)[
        "throughput_fps"]
    report["kernels_ms"] = kernel_times(fx, throughput_batch)
    return report


def kernel_times(fx, batch: int, rows: int = 30) -> dict[str, float]:
    """The top CUDA kernels (ms, summed over one call) of the compiled backbone at ``batch``, outside the
    CUDA graph so that the profiler sees every kernel."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from groot_sage_ros.bench import frame_sets
    from groot_sage_ros.engine import pad_to_bucket

    inputs = fx.prepare(frame_sets(batch, 1))
    ids = pad_to_bucket(inputs.input_ids, fx.runtime.length_bucket)
    with torch.inference_mode():
        fx._backbone_features(ids, inputs.images)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fx._backbone_features(ids, inputs.images)
            torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda event: -event.self_device_time_total)
    table = {event.key[:90]: round(event.self_device_time_total / 1000, 3) for event in events[:rows]}
    table["total"] = round(sum(event.self_device_time_total for event in events) / 1000, 3)
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--throughput-batch", type=int, default=64)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(VARIANTS[args.one], args.throughput_batch)))
        return
    results = {}
    for name in args.variants:
        env = {**os.environ, **VARIANTS[name].get("env", {})}
        done = subprocess.run([sys.executable, __file__, "--one", name, "--throughput-batch",
                               str(args.throughput_batch)], capture_output=True, text=True, env=env)  # fmt: skip
        results[name] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else \
            {"error": done.stderr[-1500:]}  # fmt: skip
        print(name, json.dumps(results[name]), flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
