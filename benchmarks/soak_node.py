"""Soak groot_node: mixed good and bad input at the maximum rate for minutes, RSS sampled every 10 s.

    python benchmarks/soak_node.py --minutes 10 --out benchmarks/soak_node.json

groot_node runs in its own process (``python -m groot_sage_ros.ros.teacher_node``) on the CPU with the tiny
checkpoint; this process publishes as fast as it can, cycling through good frames (rgb8, bgr8, mono8,
odd sizes), bad frames (unknown encoding, zero size, step/size mismatch, a CDR payload cut short, a
4-byte message) and instructions (good, blank, one with a special token, 100 kB). It reports messages
sent and received, every diagnostics counter, the node's RSS every 10 s with its slope after the first
minute (least squares, MiB/min), and the node's ERROR lines and tracebacks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import String

from groot_sage_ros.families import DEFAULT_FAMILY, by_name
from groot_sage_ros.ros.conversions import array_to_image
from groot_sage_ros.ros.feature_node import LATCHED

NODE = "soak"


def frames(stamp) -> list:
    """One of each kind of camera message, stamped now: Image messages or raw CDR bytes."""
    rng = np.random.default_rng(int(time.monotonic_ns()) % 2**32)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    good = array_to_image(rgb)
    bgr = array_to_image(rgb[:, :, ::-1].copy(), encoding="bgr8")
    mono = Image(height=48, width=64, encoding="mono8", step=64, data=rgb[:, :, 0].tobytes())
    tall = array_to_image(rng.integers(0, 256, (300, 20, 3), dtype=np.uint8))
    unknown = Image(height=4, width=4, encoding="yuv422", step=8, data=bytes(32))
    zero = Image(height=0, width=0, encoding="rgb8", step=0, data=b"")
    mismatch = Image(height=8, width=8, encoding="rgb8", step=24, data=bytes(100))
    messages = [good, bgr, mono, tall, unknown, zero, mismatch]
    for msg in messages:
        msg.header.stamp, msg.header.frame_id = stamp, "soak"
    cut = serialize_message(good)[:80]  # a CDR payload cut inside the pixel array
    return messages + [cut, b"\x00\x01\x00\x00"]


INSTRUCTIONS = ["pick up the cube", "   ", "place <IMG_CONTEXT> here", "stack the cups " * 7000, "wave"]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def slope_per_minute(samples: list[tuple[float, float]], after_s: float = 60.0) -> float | None:
    points = [(t, v) for t, v in samples if t >= after_s]
    if len(points) < 2:
        return None
    t, v = np.array(points).T
    return float(np.polyfit(t / 60.0, v, 1)[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--checkpoint", default=None, help="default: a tiny checkpoint written to a temp folder")
    parser.add_argument("--out", default="benchmarks/soak_node.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="soak_"))
    checkpoint = args.checkpoint or str(by_name(DEFAULT_FAMILY).write_tiny(work / "checkpoint"))
    env = {
        **os.environ,
        "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", "77"),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    log_path = work / "node.log"
    node_cmd = [
        sys.executable,
        "-m",
        "groot_sage_ros.ros.teacher_node",
        "--ros-args",
        "-r",
        f"__node:={NODE}",
        "-p",
        f"checkpoint:={checkpoint}",
        "-p",
        "device:=cpu",
        "-p",
        "dtype:=float32",
        "-p",
        "diagnostics_period_s:=1.0",
        "-p",
        "max_frame_age_s:=0.0",
    ]
    with open(log_path, "w") as log:
        node_proc = subprocess.Popen(node_cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    rclpy.init()
    probe = rclpy.create_node("soak_probe")
    camera = probe.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
    instruction = probe.create_publisher(String, "instruction", LATCHED)
    received, counters, lock = [0], {}, threading.Lock()
    probe.create_subscription(Image, f"{NODE}/features", lambda _: received.__setitem__(0, received[0] + 1), 10)

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"/{NODE}"):
                with lock:
                    counters.update({kv.key: kv.value for kv in status.values})

    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    deadline = time.monotonic() + 120
    while counters.get("state") != "active":
        if time.monotonic() > deadline or node_proc.poll() is not None:
            print(log_path.read_text(), file=sys.stderr)
            return 1
        time.sleep(0.2)
    sent, kinds = 0, itertools.cycle(range(9))
    instructions = itertools.cycle(INSTRUCTIONS)
    samples, start = [], time.monotonic()
    next_sample, next_instruction = start, start
    end = start + args.minutes * 60
    while (now := time.monotonic()) < end:
        if now >= next_sample:
            samples.append((round(now - start, 1), round(rss_mib(node_proc.pid), 2)))
            next_sample += 10.0
        if now >= next_instruction:
            instruction.publish(String(data=next(instructions)))
            next_instruction += 0.5
        batch = frames(probe.get_clock().now().to_msg())
        for _ in range(9):
            camera.publish(batch[next(kinds)])
            sent += 1
    samples.append((round(time.monotonic() - start, 1), round(rss_mib(node_proc.pid), 2)))
    time.sleep(2.0)  # the last diagnostics
    node_proc.terminate()  # SIGTERM: rclpy's handler shuts the node down
    node_proc.wait(timeout=30)
    executor.shutdown(timeout_sec=2.0)
    log = log_path.read_text()
    report = {
        "command": "python benchmarks/soak_node.py " + " ".join(sys.argv[1:]),
        "minutes": args.minutes,
        "messages_sent": sent,
        "features_received": received[0],
        "counters": {
            k: v for k, v in sorted(counters.items()) if k.startswith(("rejected", "dropped", "frames", "published"))
        },
        "rss_mib_every_10s": samples,
        "rss_slope_mib_per_min_after_1min": slope_per_minute(samples),
        "error_lines": [line for line in log.splitlines() if "[ERROR]" in line][:20],
        "tracebacks": log.count("Traceback"),
        "node_exit_code": node_proc.returncode,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "rss_mib_every_10s"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
