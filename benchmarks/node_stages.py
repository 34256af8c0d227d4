"""groot_node's own stage timings (decode, preprocess, model, publish, arrival-to-publish) on the GPU machine.

The node and a camera publisher run in this one process (cross-process DDS drops most large messages on
the GPU machine, so end-to-end receipt there says nothing about the node): 640x480 rgb8 frames at 10 Hz
for ``--seconds``, then the node's latency percentiles as it reports them in /diagnostics.

    python benchmarks/node_stages.py --checkpoint CKPT --device cuda --precision fp16 --out node_stages.json
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from groot_sage_ros.ros.conversions import array_to_image
from groot_sage_ros.ros.teacher_node import TeacherNode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    rclpy.init()
    params = {
        "checkpoint": args.checkpoint,
        "device": args.device,
        "dtype": args.dtype,
        "precision": args.precision,
        "max_frame_age_s": 0.0,
    }
    node = TeacherNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    probe = rclpy.create_node("stage_probe")
    publisher = probe.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()
    frames = [np.random.default_rng(k).integers(0, 256, (480, 640, 3), dtype=np.uint8) for k in range(4)]
    start, k = time.monotonic(), 0
    while time.monotonic() - start < args.seconds:
        msg = array_to_image(frames[k % 4])
        msg.header.stamp = probe.get_clock().now().to_msg()
        publisher.publish(msg)
        k += 1
        time.sleep(max(0.0, start + k / args.hz - time.monotonic()))
    time.sleep(1.0)
    stages = {stage: {"p50_ms": p50, "p95_ms": p95} for stage, (p50, p95) in node.latency.percentiles().items()}
    report = {
        "checkpoint": args.checkpoint,
        "precision": args.precision,
        "frames_sent": k,
        "published": node.counters.snapshot().get("published", 0),
        "stages": stages,
        "start": node.engine.start_report(),
    }
    if "total" in stages and "model" in stages:
        report["arrival_to_publish_minus_model_p50_ms"] = stages["total"]["p50_ms"] - stages["model"]["p50_ms"]
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    executor.shutdown()
    node.stop()
    node.release()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
