"""groot_node end to end: camera image published -> features received, at 10 Hz and at the maximum rate.

Starts groot_node as its own process (as on a robot, apart from the camera driver), publishes 640x480
rgb8 frames over real DDS from this one (pre-serialised, only the stamp patched, so the publisher costs
almost nothing) and matches features to frames by header stamp. Prints JSON with median and p95
latency, the output rate, and the node's own per-stage latencies from /diagnostics.

    python benchmarks/node_latency.py --checkpoint CKPT --device cuda --out node_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from groot_sage_ros.ros.conversions import array_to_image, stamp_ns


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def run_phase(probe, publisher, received, sent, hz: float | None, seconds: float) -> dict:
    sent.clear()
    received.clear()
    frames = [np.random.default_rng(k).integers(0, 256, (480, 640, 3), dtype=np.uint8) for k in range(4)]
    messages = [bytearray(serialize_message(array_to_image(f))) for f in frames]
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds:
        data = messages[k % 4]
        now = probe.get_clock().now().nanoseconds
        struct.pack_into("<iI", data, 4, now // 1_000_000_000, now % 1_000_000_000)  # header.stamp in CDR
        sent[now] = time.monotonic()
        publisher.publish(bytes(data))
        k += 1
        if hz:
            time.sleep(max(0.0, start + k / hz - time.monotonic()))
        else:
            time.sleep(0.0005)  # as fast as DDS takes them
    time.sleep(1.0)
    latencies = [(t - sent[s]) * 1000.0 for s, t in received if s in sent]
    arrivals = sorted(t for _, t in received)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    return {
        "input_hz_requested": hz or "max",
        "frames_published": k,
        "input_hz_achieved": k / seconds,
        "features_received": len(latencies),
        "output_hz": (len(arrivals) - 1) / span if len(arrivals) > 1 else 0.0,
        "latency_ms_median": statistics.median(latencies) if latencies else float("nan"),
        "latency_ms_p95": percentile(latencies, 0.95),
    }


def main() -> None:
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")  # ~1 MB frames between processes
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "groot_sage_ros.ros.teacher_node",
            "--ros-args",
            "-p",
            f"checkpoint:={args.checkpoint}",
            "-p",
            f"device:={args.device}",
            "-p",
            f"dtype:={args.dtype}",
            "-p",
            "diagnostics_period_s:=0.5",
        ]
    )
    rclpy.init()
    probe = rclpy.create_node("latency_probe")
    received: list[tuple[int, float]] = []
    sent: dict[int, float] = {}
    diagnostics: dict[str, str] = {}
    probe.create_subscription(
        Image, "/groot_node/features", lambda m: received.append((stamp_ns(m.header.stamp), time.monotonic())), 10
    )
    probe.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: diagnostics.update({kv.key: kv.value for s in m.status for kv in s.values}),
        10,
    )
    publisher = probe.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
    executor = MultiThreadedExecutor()
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()
    deadline = time.monotonic() + 600
    while diagnostics.get("state") != "active" and time.monotonic() < deadline:
        time.sleep(0.2)
    warm = run_phase(probe, publisher, received, sent, 5.0, 0.2)  # until DDS has matched both ways
    while not warm["features_received"] and time.monotonic() < deadline:
        warm = run_phase(probe, publisher, received, sent, 5.0, 0.2)
    report = {
        "checkpoint": args.checkpoint,
        "device": args.device,
        "dtype": args.dtype,
        "start_s": diagnostics.get("start_s"),
    }
    for name, hz in (("10hz", 10.0), ("max_rate", None)):
        report[name] = run_phase(probe, publisher, received, sent, hz, args.seconds)
        time.sleep(1.0)
        report[name]["node_diagnostics"] = {
            k: v for k, v in diagnostics.items() if k.startswith(("latency", "dropped"))
        }
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    executor.shutdown()
    node.send_signal(signal.SIGINT)
    node.wait(timeout=30)
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
