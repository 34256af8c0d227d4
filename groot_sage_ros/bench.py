"""``groot-sage bench``: synchronised backbone timings after warm-up, median and p95, peak memory."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from .engine import FeatureExtractor


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


def run_bench(
    extractor: FeatureExtractor, batch: int, cameras: int, iters: int, warmup: int, actions: bool = False
) -> dict:
    device = extractor.device
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(cameras)]
    frame_sets = [(images, "pick up the red cube and place it in the bowl")] * batch
    inputs = extractor.prepare(frame_sets)
    for _ in range(warmup):
        extractor.forward(inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    model_ms = time_calls(lambda: extractor.forward(inputs), iters, device)
    end_to_end_ms = time_calls(lambda: extractor.forward(extractor.prepare(frame_sets)), iters, device)
    result = extractor.forward(inputs)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(extractor.dtype).removeprefix("torch."),
        "batch": batch,
        "cameras": cameras,
        "features_shape": list(result.features.shape),
        "finite": bool(torch.isfinite(result.features).all()),
        "backbone_ms_median": statistics.median(model_ms),
        "backbone_ms_p95": percentile(model_ms, 0.95),
        "with_preprocess_ms_median": statistics.median(end_to_end_ms),
        "throughput_fps": batch * 1000.0 / statistics.median(model_ms),
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
        "iters": iters,
    }
    if actions:
        report.update(time_actions(extractor, inputs, result, iters, warmup))
    return report


def time_actions(extractor: FeatureExtractor, inputs, result, iters: int, warmup: int) -> dict:
    """The action head alone (4 Euler steps on given features) and the full model (backbone + head)."""
    device, head_cfg = extractor.device, extractor.config.action_head
    states = torch.zeros(len(result.layouts), head_cfg.max_state_dim)

    def head_only():
        return extractor.predict_actions(result, states, embodiment_id=31, seed=0)

    def full():
        return extractor.predict_actions(extractor.forward(inputs), states, embodiment_id=31, seed=0)

    for _ in range(warmup):
        full()
    head_ms, full_ms = time_calls(head_only, iters, device), time_calls(full, iters, device)
    return {
        "action_steps": head_cfg.num_inference_timesteps,
        "action_head_ms_median": statistics.median(head_ms),
        "action_head_ms_p95": percentile(head_ms, 0.95),
        "full_ms_median": statistics.median(full_ms),
        "full_ms_p95": percentile(full_ms, 0.95),
        "actions_finite": bool(torch.isfinite(full()).all()),
        "peak_mem_gb_with_head": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
    }
