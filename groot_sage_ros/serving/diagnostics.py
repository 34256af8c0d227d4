"""The feature nodes' diagnostics as a table of strings (ROS-free): what ``/diagnostics`` carries.

    values = diagnostic_values(config, model_id, state, engine, counters, latency, output_rate, input_rates)

Keys: the node's state and model, device and dtype, feature dim, output and input rates, the start
(``start_s`` and the engine's ``start_report``), GPU memory, ``latency_ms_p50[stage]`` and
``latency_ms_p95[stage]``, then every counter (``frames_received``, ``published``, ``dropped_*``,
``rejected_*``, ...), then what the node's parts add.
"""

from __future__ import annotations

from .stats import Counters, LatencyStats, RateMeter


def diagnostic_values(
    config,
    model_id: str,
    state: str,
    engine,
    counters: Counters,
    latency: LatencyStats,
    output_rate: RateMeter,
    input_rates: list[RateMeter],
    start_seconds: float | None = None,
    extra: dict | None = None,
) -> dict[str, str]:
    """The table, every value a string; ``engine`` may be None (released)."""
    values = {
        "state": state,
        "model_id": model_id,
        "device": config.device,
        "dtype": config.dtype,
        "feature_dim": engine.feature_dim if engine is not None else "",
        "output_rate_hz": f"{output_rate.rate():.2f}",
        "start_s": f"{start_seconds:.2f}" if start_seconds is not None else "",
        **(start_values(engine) if engine is not None else {}),
        "gpu_memory_mb": gpu_memory_mb(engine),
    }
    for topic, meter in zip(config.camera_topics, input_rates):
        values[f"input_rate_hz[{topic}]"] = f"{meter.rate():.2f}"
    for stage, (p50, p95) in latency.percentiles().items():
        values[f"latency_ms_p50[{stage}]"] = f"{p50:.2f}"
        values[f"latency_ms_p95[{stage}]"] = f"{p95:.2f}"
    values.update({name: str(count) for name, count in counters.snapshot().items()})
    values.update(extra or {})
    return {key: str(value) for key, value in values.items()}


def start_values(engine) -> dict[str, str]:
    """How the start went (``FeatureEngine.start_report``): weights, warm-up, compile cache, graphs."""
    return {
        key: f"{value:.2f}" if isinstance(value, float) else str(value) for key, value in engine.start_report().items()
    }


def gpu_memory_mb(engine) -> str:
    if engine is None or engine.device.type != "cuda":
        return "n/a"
    import torch

    return f"{torch.cuda.memory_allocated(engine.device) / 2**20:.0f}"
