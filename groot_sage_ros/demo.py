"""``make demo``: GR00T features over real ROS 2 topics from a played rosbag2 file.

1. writes the tiny checkpoint (real layout, random weights) and a bag of real photos (scikit-image's
   samples, JPEG-compressed) with two instructions, 10 Hz;
2. starts ``groot_node`` as its own process (use_sim_time, namespace /demo);
3. plays the bag with /clock, like ``ros2 bag play --clock``, and prints what arrives on ~/features.
Runs on the CPU; needs no ROS launch tooling.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from .families import DEFAULT_FAMILY, by_name
from .offline.bags import CameraFrame, write_camera_bag
from .output_folder import OutputError, OutputFolder

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat")
BAG_START_NS = 1_700_000_000 * 1_000_000_000
INSTRUCTIONS = ((0.0, "pick up the coffee cup"), (2.45, "point at the rocket"))


def photo_frames(count: int, hz: float) -> list[CameraFrame]:
    from skimage import data

    photos = [np.asarray(PILImage.fromarray(getattr(data, name)()).convert("RGB")) for name in PHOTOS]
    return [
        CameraFrame(BAG_START_NS + int(k * 1e9 / hz), photos[k % len(photos)], "camera_optical") for k in range(count)
    ]


def write_demo_bag(out: Path, count: int, hz: float) -> Path:
    OutputFolder.claim(out, "bag", overwrite=True).release()  # replaces only an earlier demo's bag
    instructions = [(BAG_START_NS + int(t * 1e9), text) for t, text in INSTRUCTIONS]
    # JPEG, as robots usually record: ~50 kB a frame instead of ~800 kB raw
    return write_camera_bag(
        out,
        photo_frames(count, hz),
        instructions,
        camera_topic="/demo/camera/image_raw",
        instruction_topic="/demo/instruction",
        compressed=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="working folder (default: demo_out)")
    parser.add_argument("--frames", type=int, default=48, help="camera frames in the bag (default: 48)")
    parser.add_argument("--hz", type=float, default=10.0, help="camera rate in the bag (default: 10)")
    parser.add_argument(
        "--student", default=None, help="serve this student.safetensors with sage_node instead of groot_node"
    )
    parser.add_argument(
        "--family",
        default=DEFAULT_FAMILY,
        help=f"the tiny teacher's GR00T family, e.g. n1_7 (default: {DEFAULT_FAMILY})",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        folder = OutputFolder.claim(out, "demo")  # a new folder or an earlier demo's; held while the demo runs
    except OutputError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    try:
        family = by_name(args.family, "--family")
        name = "tiny_checkpoint" if family.name == DEFAULT_FAMILY else f"tiny_checkpoint_{family.name}"
        checkpoint = family.write_tiny(out / name)
        bag = write_demo_bag(out / "photos_bag", args.frames, args.hz)
    except OutputError as err:  # e.g. a demo folder of an earlier version, whose files have no journal
        folder.release()
        print(
            f"demo: error: {err} (a demo folder from an earlier version: pass --out NEW or remove {out})",
            file=sys.stderr,
        )
        return 2
    except ValueError as err:  # an unknown family
        folder.release()
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {checkpoint} (tiny {family.name}, real layout) and {bag} ({args.frames} photos at {args.hz:g} Hz)")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # Camera frames are ~1 MB: Fast DDS's default UDP/small-SHM transports drop most of them between
    # processes; its LARGE_DATA builtin transports (SHM + TCP) carry them (see README, "Large images").
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))
    module, name, model = (
        ("teacher_node", "groot_node", f"checkpoint:={checkpoint}")
        if not args.student
        else ("student_node", "sage_node", f"student:={args.student}")
    )
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            f"groot_sage_ros.ros.{module}",
            "--ros-args",
            "-r",
            "__ns:=/demo",
            "-p",
            model,
            "-p",
            "device:=cpu",
            "-p",
            "dtype:=float32",
            "-p",
            "use_sim_time:=true",
            "-p",
            "diagnostics_period_s:=0.5",
            "-p",
            "camera_topics:=['camera/image_raw/compressed']",
        ],
    )
    try:
        return watch(bag, args.frames, name)
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
        folder.release()


def watch(bag: Path, expected: int, name: str = "groot_node") -> int:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from .ros.bag_player import BagPlayer
    from .ros.conversions import stamp_ns
    from .ros.feature_node import LATCHED

    rclpy.init()
    probe = rclpy.create_node("demo_probe")
    sent: dict[int, float] = {}  # camera stamp -> wall time it was published
    rows, layout, diagnostics = [], {}, {}

    def on_features(msg: Image) -> None:
        stamp = stamp_ns(msg.header.stamp)
        latency = (time.monotonic() - sent[stamp]) * 1000.0 if stamp in sent else float("nan")
        rows.append((time.monotonic(), stamp, latency))
        print(
            f"features #{len(rows):2d}  ({msg.height} tokens x {msg.width}) {msg.encoding}  "
            f"stamp {stamp / 1e9:.2f} {'matches a played frame' if stamp in sent else 'UNKNOWN STAMP'}  "
            f"latency {latency:6.1f} ms  instruction {layout.get('instruction', '?')!r}"
        )

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"/demo/{name}"):
                diagnostics.update({kv.key: kv.value for kv in status.values})

    probe.create_subscription(Image, f"/demo/{name}/features", on_features, 10)
    probe.create_subscription(
        String, f"/demo/{name}/features/layout", lambda m: layout.update(json.loads(m.data)), LATCHED
    )
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while diagnostics.get("state") != "active":
            if time.monotonic() > deadline:
                print(f"{name} did not become active", file=sys.stderr)
                return 1
            time.sleep(0.1)
        print(
            f"{name} active (model {diagnostics.get('model_id')}, feature dim {diagnostics.get('feature_dim')});"
            f" playing {bag} with /clock"
        )

        def record(topic, msg):
            if "image_raw" in topic:
                sent[stamp_ns(msg.header.stamp)] = time.monotonic()

        played = BagPlayer(probe, bag).play(on_message=record)
        time.sleep(1.5)  # the last features, and diagnostics after them
        summarize(rows, played, expected, diagnostics)
        return 0 if rows and all(stamp in sent for _, stamp, _ in rows) else 1
    finally:
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()


def summarize(rows, played: int, expected: int, diagnostics: dict) -> None:
    latencies = sorted(latency for _, _, latency in rows)
    span = rows[-1][0] - rows[0][0] if len(rows) > 1 else float("nan")
    print(
        f"\nplayed {played} messages ({expected} camera frames); received {len(rows)} feature messages, "
        f"all stamps matching played frames: {all(np.isfinite(ms) for ms in latencies)}"
    )  # noqa: E741
    if latencies:
        print(
            f"output rate {(len(rows) - 1) / span:.1f} Hz, latency image->features median "
            f"{statistics.median(latencies):.1f} ms, p95 {latencies[int(0.95 * (len(latencies) - 1))]:.1f} ms"
        )
    keys = ("frames_received", "published", "dropped_superseded", "dropped_stale", "latency_ms_p50[model]")
    print("node diagnostics: " + ", ".join(f"{k}={diagnostics.get(k, 0)}" for k in keys))


if __name__ == "__main__":
    raise SystemExit(main())
