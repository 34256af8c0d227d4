"""The feature nodes' diagnostics table, on its own (ROS-free): the keys and values /diagnostics carries."""

from groot_sage_ros.serving.diagnostics import diagnostic_values
from groot_sage_ros.serving.node_config import TeacherNodeConfig
from groot_sage_ros.serving.stats import Counters, LatencyStats, RateMeter


def test_the_table_holds_state_rates_latency_percentiles_counters_and_the_parts_values(tiny_engine):
    config = TeacherNodeConfig(device="cpu", camera_topics=["front", "wrist"])
    counters, latency = Counters(), LatencyStats()
    counters.add("published", 3)
    counters.add("rejected_corrupt_message")
    for ms in (1.0, 2.0, 3.0, 4.0, 100.0):
        latency.add("model", ms)
    values = diagnostic_values(
        config,
        "ckpt",
        "active",
        tiny_engine,
        counters,
        latency,
        RateMeter(),
        [RateMeter(), RateMeter()],
        start_seconds=1.25,
        extra={"fidelity_cosine_mean": "n/a"},
    )
    assert values["state"] == "active" and values["model_id"] == "ckpt" and values["device"] == "cpu"
    assert values["feature_dim"] == str(tiny_engine.feature_dim) and values["start_s"] == "1.25"
    assert values["latency_ms_p50[model]"] == "3.00" and values["latency_ms_p95[model]"] == "100.00"
    assert values["published"] == "3" and values["rejected_corrupt_message"] == "1"
    assert {"input_rate_hz[front]", "input_rate_hz[wrist]", "output_rate_hz", "gpu_memory_mb"} <= set(values)
    assert values["gpu_memory_mb"] == "n/a" and values["fidelity_cosine_mean"] == "n/a"
    assert all(isinstance(v, str) for v in values.values())
    released = diagnostic_values(config, "ckpt", "inactive", None, counters, latency, RateMeter(), [])
    assert released["feature_dim"] == "" and released["state"] == "inactive"
