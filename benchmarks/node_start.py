"""groot_node from process start to steady state, in one process (issue 27's robot-restart figures).

Measures, with ``time.monotonic`` from the top of this script (before torch, rclpy or the package is
imported): imports, the node's start as ``ros2 run`` makes it (autostart: configure, with the engine load
and the warm-up through every serving path, then activate, in the constructor; then a single-threaded
executor spins it), the first feature message received; the first frame's latency after activate and
again after a deactivate/activate cycle (the engine stays loaded); then per-stage p50/p95 as the node
reports them over ``--seconds`` of 640x480 rgb8 frames at ``--hz``. The camera is a thread of its own
that publishes pre-serialised frames (only the stamp is patched), so it costs the interpreter next to
nothing and is never starved; it runs from before the node exists, as a robot's camera does. Node and
camera share the process: cross-process DDS drops large messages on the GPU machine (benchmarks/README.md),
which would measure the transport, not the node.

    python benchmarks/node_start.py --checkpoint CKPT --device cuda --out node_start.json
"""

from __future__ import annotations

import time

PROCESS_START = time.monotonic()

import argparse  # noqa: E402
import json  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402


def now() -> float:
    return time.monotonic() - PROCESS_START


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--seconds", type=float, default=30.0, help="steady-state frames (default: 30)")
    parser.add_argument("--hz", type=float, default=30.0, help="camera rate (default: 30)")
    parser.add_argument("--out")
    args = parser.parse_args()
    marks = {}
    from groot_sage_ros.entry_points import keep_unused_packages_out

    keep_unused_packages_out()  # as the groot_node console script starts
    import numpy as np
    import rclpy
    import torch  # noqa: F401  (timed with the rest of the imports)
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from groot_sage_ros.ros.conversions import array_to_image, stamp_ns
    from groot_sage_ros.ros.teacher_node import TeacherNode

    marks["imports_done_s"] = now()
    rclpy.init()
    probe = rclpy.create_node("start_probe")
    publisher = probe.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
    received = []  # (receipt time, feature message)
    probe.create_subscription(Image, "groot_node/features", lambda m: received.append((time.time(), m)), 50)
    probe_executor = SingleThreadedExecutor()
    probe_executor.add_node(probe)
    threading.Thread(target=probe_executor.spin, daemon=True).start()
    frames = [np.random.default_rng(k).integers(0, 256, (480, 640, 3), dtype=np.uint8) for k in range(4)]
    payloads = [bytearray(serialize_message(array_to_image(frame))) for frame in frames]  # CDR, stamp at 4:12
    sent = {"count": 0}
    running = threading.Event()

    def camera() -> None:  # paced by the clock, never waiting for the node
        start, k = time.monotonic(), 0
        while running.is_set():
            payload, stamp = payloads[k % 4], time.time()
            struct.pack_into("<iI", payload, 4, int(stamp), int((stamp % 1) * 1e9))
            publisher.publish(bytes(payload))
            sent["count"] += 1
            k += 1
            time.sleep(max(0.0, start + k / args.hz - time.monotonic()))

    def first_latency_ms(after: float) -> float:
        """Latency (camera stamp to receipt) of the first feature message stamped after ``after``."""
        deadline = time.time() + 120
        while time.time() < deadline:
            for got, msg in list(received):
                if stamp_ns(msg.header.stamp) / 1e9 >= after:
                    return (got - stamp_ns(msg.header.stamp) / 1e9) * 1e3
            time.sleep(0.001)
        raise SystemExit("no feature message within 120 s")

    running.set()
    threading.Thread(target=camera, daemon=True).start()
    tick = now()
    params = {"checkpoint": args.checkpoint, "device": args.device, "dtype": args.dtype}
    params["max_frame_age_s"] = 0.0
    node = TeacherNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])  # autostart
    marks["node_start_s"] = now() - tick
    activated = time.time()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    marks["first_frame_after_activate_ms"] = first_latency_ms(activated)
    marks["process_start_to_first_feature_s"] = now()
    time.sleep(1.0)
    node.trigger_deactivate()
    time.sleep(1.0)
    tick = now()
    reactivated = time.time()
    node.trigger_activate()
    marks["reactivate_s"] = now() - tick
    marks["first_frame_after_reactivate_ms"] = first_latency_ms(reactivated)
    steady_from, sent_before, received_before = time.time(), sent["count"], len(received)
    time.sleep(args.seconds)
    running.clear()
    time.sleep(1.0)
    steady = [(got, stamp_ns(m.header.stamp) / 1e9) for got, m in received]
    latencies = [(got - stamp) * 1e3 for got, stamp in steady if stamp >= steady_from]
    stages = {stage: {"p50_ms": p50, "p95_ms": p95} for stage, (p50, p95) in node.latency.percentiles().items()}
    report = {
        "checkpoint": args.checkpoint,
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        **{k: round(v, 3) for k, v in marks.items()},
        "engine_start": node.engine.start_report(),
        "warmup_serving_s": node.warmup_seconds,
        "steady": {
            "seconds": args.seconds,
            "hz": args.hz,
            "frames_sent": sent["count"] - sent_before,
            "features_received": len(received) - received_before,
            "latency_ms_p50": float(np.percentile(latencies, 50)) if latencies else None,
            "latency_ms_p95": float(np.percentile(latencies, 95)) if latencies else None,
            "stages": stages,  # the node's window: its last 200 frames
            "counters": node.counters.snapshot(),
        },
        "command": "python benchmarks/node_start.py " + " ".join(__import__("sys").argv[1:]),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    executor.shutdown()
    probe_executor.shutdown()
    node.stop()
    node.release()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
