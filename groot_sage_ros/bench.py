"""``groot-sage bench``: synchronised timings after warm-up (median, p95) per stage, fast path against eager.

Stages: ``preprocess`` (crop, resize, tokenise, copy to the device), ``backbone`` (features from prepared
inputs), ``action_head`` (4 Euler steps on given features) and ``full`` (backbone + head). With
``compare_eager`` the plain PyTorch path (``forward_reference``: no compile, no graphs) is timed
in the same run on the same weights, its figures under ``eager_*`` keys, and the two paths' outputs are
compared (the numerics check). Start times come from fresh processes (``start_times``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from .api import FeatureEngine

INSTRUCTION = "pick up the red cube and place it in the bowl"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def time_calls(fn, iters: int, device: torch.device) -> list[float]:
    """Milliseconds per call; the device is synchronised around every call."""
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def timed(name: str, fn, iters: int, warmup: int, device: torch.device) -> dict:
    """``{name}_ms_median`` and ``{name}_ms_p95`` of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ms = time_calls(fn, iters, device)
    return {f"{name}_ms_median": statistics.median(ms), f"{name}_ms_p95": percentile(ms, 0.95)}


def frame_sets(batch: int, cameras: int) -> list:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(cameras)]
    return [(images, INSTRUCTION)] * batch


def agreement(fast: torch.Tensor, eager: torch.Tensor) -> dict:
    """How close the fast path's output is to eager's: worst token cosine and relative L2 error."""
    fast, eager = fast.float().flatten(0, -2), eager.float().flatten(0, -2)  # (tokens, D)
    cosine = torch.nn.functional.cosine_similarity(fast, eager, dim=-1)
    return {
        "min_token_cosine": cosine.min().item(),
        "rel_l2_error": ((fast - eager).norm() / eager.norm().clamp(min=1e-12)).item(),
    }


def run_bench(
    engine: FeatureEngine,
    batch: int,
    cameras: int,
    iters: int,
    warmup: int,
    actions: bool = False,
    compare_eager: bool = False,
    throughput_batch: int | None = None,
    throughput_calls: int | None = None,
) -> dict:
    device = engine.device
    sets = frame_sets(batch, cameras)
    inputs = engine.prepare(sets)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(engine.dtype).removeprefix("torch."),
        "start": engine.start_report(),
        "batch": batch,
        "cameras": cameras,
        "tokens": int(inputs.input_ids.shape[1]),
        "iters": iters,
    }
    result = engine.forward(inputs)
    report["features_shape"] = list(result.features.shape)
    report["finite"] = bool(torch.isfinite(result.features).all())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    report.update(timed("preprocess", lambda: engine.prepare(sets), iters, warmup, device))
    report.update(timed("backbone", lambda: engine.forward(inputs), iters, warmup, device))
    if device.type == "cuda":
        report["peak_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        report["peak_reserved_gb"] = torch.cuda.max_memory_reserved(device) / 1e9
    if compare_eager:
        report.update(timed("eager_backbone", lambda: engine.forward_reference(inputs), iters, warmup, device))
        report["backbone_speedup"] = report["eager_backbone_ms_median"] / report["backbone_ms_median"]
        report["features_vs_eager"] = agreement(result.features, engine.forward_reference(inputs).features)
    if actions:
        report.update(time_actions(engine, inputs, result, iters, warmup, compare_eager))
    if throughput_batch:
        calls = throughput_calls or max(3, iters // 5)
        report.update(throughput(engine, throughput_batch, cameras, calls, warmup, compare_eager))
    return report


def time_actions(engine: FeatureEngine, inputs, result, iters: int, warmup: int, compare_eager: bool) -> dict:
    """The action head alone (4 Euler steps on given features) and the full model (backbone + head)."""
    device = engine.device
    states = torch.zeros(len(result.layouts), engine.state_width)  # embodiment 0: any id costs the same

    def head(eager=False):
        return engine.predict_actions(result, states, embodiment_id=0, seed=0, reference=eager)

    def full(eager=False):
        features = engine.forward_reference(inputs) if eager else engine.forward(inputs)
        return engine.predict_actions(features, states, embodiment_id=0, seed=0, reference=eager)

    report = {"action_horizon": engine.action_horizon}
    report.update(timed("action_head", head, iters, warmup, device))
    report.update(timed("full", full, iters, warmup, device))
    chunk = full()
    report["actions_finite"] = bool(torch.isfinite(chunk).all())
    if compare_eager:
        report.update(timed("eager_action_head", lambda: head(True), iters, warmup, device))
        report.update(timed("eager_full", lambda: full(True), iters, warmup, device))
        report["full_speedup"] = report["eager_full_ms_median"] / report["full_ms_median"]
        report["actions_vs_eager"] = agreement(chunk, full(True))
    return report


def throughput(engine: FeatureEngine, batch: int, cameras: int, iters: int, warmup: int, compare_eager) -> dict:
    """Frames per second of the model alone at ``batch`` (prepared inputs), fast path and eager."""
    device = engine.device
    inputs = engine.prepare(frame_sets(batch, cameras))
    report = {"throughput_batch": batch, "throughput_calls": iters}
    for _ in range(warmup):
        engine.forward(inputs)
    calls = time_calls(lambda: engine.forward(inputs), iters, device)  # back to back: the sustained rate
    report["throughput_fps"] = batch * 1000.0 / statistics.median(calls)
    report["throughput_fps_last_quarter"] = batch * 1000.0 / statistics.median(calls[-max(1, iters // 4) :])
    if compare_eager:
        eager = timed("batch", lambda: engine.forward_reference(inputs), iters, warmup, device)["batch_ms_median"]
        report["eager_throughput_fps"] = batch * 1000.0 / eager
    return report


def start_times(checkpoint: str, device: str, dtype: str, cache_dir: str | None = None) -> dict:
    """Start to first features of fresh ``groot-sage features`` processes: compiled with an empty kernel
    cache (cold), again with the cache it left (warm), and the eager path. From process start to the
    first frame's features (interpreter, imports, weights, compilation, graphs; not the exit), with each
    process's breakdown, its whole wall time and its peak GPU memory. ``{name}_engine_start_s`` is the part
    a node pays at configure (weights, compilation, warm-up), without the interpreter and imports."""
    from PIL import Image

    cache = cache_dir or tempfile.mkdtemp(prefix="groot_sage_inductor_")
    image = os.path.join(tempfile.mkdtemp(prefix="groot_sage_bench_"), "camera.png")
    Image.fromarray(frame_sets(1, 1)[0][0][0]).save(image)
    report = {}
    for name, compile_mode in (("cold", "on"), ("warm", "on"), ("eager", "off")):
        command = [
            sys.executable,
            "-m",
            "groot_sage_ros.cli",
            "features",
            "--checkpoint",
            checkpoint,
            "--image",
            image,
            "--instruction",
            INSTRUCTION,
            "--repeat",
            "1",
            "--device",
            device,
            "--dtype",
            dtype,
            "--compile",
            compile_mode,
            "--compile-cache-dir",
            cache,
            "--json",
        ]
        if compile_mode == "off":
            command.append("--no-cuda-graphs")
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
        child = json.loads(done.stdout)
        report[f"{name}_start_s"] = child["first_features_s"] or wall
        report[f"{name}_start_detail"] = {
            "process_wall_s": wall,
            **{k: child[k] for k in ("imports_s", "load_s", "warmup_s", "compile_cache") if k in child},
        }
        report[f"{name}_engine_start_s"] = child["load_s"] + child["warmup_s"]
        if child.get("peak_reserved_gb") is not None:
            report[f"{name}_peak_mem_gb"] = child["peak_reserved_gb"]
    if "warm_peak_mem_gb" in report:  # the backbone at batch 1 in a process of its own (no eager run, no head)
        report["peak_mem_gb"] = report["warm_peak_mem_gb"]
    return report
