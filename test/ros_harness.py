"""A real rclpy harness: the node under test plus a probe node, spun by one executor thread over DDS."""

from __future__ import annotations

import os
import random
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from groot_sage_ros.ros.conversions import array_to_image
from groot_sage_ros.ros.feature_node import LATCHED
from groot_sage_ros.ros.teacher_node import TeacherNode


def isolate_dds() -> None:
    """A domain of its own so parallel runs on one machine never see each other's topics."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def wait_for(predicate, timeout: float = 20.0, period: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


def frame_sender(node, executor, publisher, image: np.ndarray, spin_s: float):
    """A callable that publishes ``image`` stamped with ``node``'s clock now and spins ``executor`` once."""

    def send() -> None:
        msg = array_to_image(image)
        msg.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(msg)
        executor.spin_once(timeout_sec=spin_s)

    return send


class TeacherHarness:
    """groot_node (or, with ``node_cls``, sage_node) plus a probe node publishing and recording."""

    def __init__(
        self,
        namespace: str,
        checkpoint,
        cameras=("camera/image_raw",),
        node_cls=TeacherNode,
        model_param: str = "checkpoint",
        **params,
    ):
        overrides = {
            model_param: str(checkpoint),
            "device": "cpu",
            "dtype": "float32",
            "camera_topics": list(cameras),
            "warn_throttle_s": 0.0,
            **params,
        }
        self.namespace = namespace
        self.node = node_cls(
            namespace=namespace, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()]
        )
        self.node_name = self.node.get_name()
        self.probe = rclpy.create_node("probe", namespace=namespace)
        self.features: list[Image] = []
        self.layouts: list[String] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.subscribe_features()
        self.probe.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.camera_pubs = [
            self.probe.create_publisher(
                CompressedImage if t.endswith("/compressed") else Image, t, qos_profile_sensor_data
            )
            for t in cameras
        ]
        self.instruction_pub = self.probe.create_publisher(String, "instruction", LATCHED)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def subscribe_features(self):
        self.probe.create_subscription(Image, f"{self.node_name}/features", self.features.append, 10)
        self.probe.create_subscription(String, f"{self.node_name}/features/layout", self.layouts.append, LATCHED)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        if any(s.name.startswith(f"/{self.namespace}/{self.node_name}") for s in msg.status):
            self.diagnostics.append(msg)

    def stamp(self, offset_s: float = 0.0):
        return (self.probe.get_clock().now() + rclpy.duration.Duration(seconds=offset_s)).to_msg()

    def publish_rgb(self, rgb: np.ndarray, camera: int = 0, frame_id: str = "cam", stamp=None) -> Image:
        msg = array_to_image(rgb)
        msg.header.frame_id, msg.header.stamp = frame_id, stamp or self.stamp()
        self.camera_pubs[camera].publish(msg)
        return msg

    def publish(self, msg, camera: int = 0):
        if not msg.header.stamp.sec:
            msg.header.stamp = self.stamp()
        self.camera_pubs[camera].publish(msg)
        return msg

    def diag_values(self) -> dict[str, str]:
        if not self.diagnostics:
            return {}
        status = self.diagnostics[-1].status[0]
        return {kv.key: kv.value for kv in status.values}

    def counter(self, name: str) -> int:
        return max(
            (int({kv.key: kv.value for kv in d.status[0].values}.get(name, 0)) for d in self.diagnostics), default=0
        )

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)
        self.node.stop()
        self.node.release()
        self.node.destroy_node()
        self.probe.destroy_node()
