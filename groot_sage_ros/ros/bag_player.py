"""Play a rosbag2 file into ROS 2 topics, like ``ros2 bag play --clock`` (for machines without rosbag2)."""

from __future__ import annotations

import time
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from ..offline.bags import read_raw
from .feature_node import LATCHED

MESSAGE_TYPES = {
    "sensor_msgs/msg/Image": (Image, qos_profile_sensor_data),
    "sensor_msgs/msg/CompressedImage": (CompressedImage, qos_profile_sensor_data),
    "std_msgs/msg/String": (String, LATCHED),
}


class BagPlayer:
    """Publishes a bag's messages at their recorded pace (scaled by ``rate``) and the bag time on /clock."""

    def __init__(self, node: Node, bag: str | Path, rate: float = 1.0):
        self.node, self.bag, self.rate = node, Path(bag), rate
        self.clock_pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=10))
        self.publishers: dict[str, object] = {}

    def prepare(self, wait_for_subscribers_s: float = 5.0) -> None:
        """Create a publisher per known topic of the bag and wait (bounded) until each has a subscriber,
        so the first messages are not published into the void before DDS has matched."""
        with Reader(self.bag) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections if c.msgtype in MESSAGE_TYPES}
        for topic, msgtype in topics.items():
            msg_type, qos = MESSAGE_TYPES[msgtype]
            self.publishers[topic] = self.node.create_publisher(msg_type, topic, qos)
        deadline = time.monotonic() + wait_for_subscribers_s
        while time.monotonic() < deadline and not all(p.get_subscription_count() for p in self.publishers.values()):
            time.sleep(0.05)

    def play(self, on_message=None) -> int:
        """Publish every message of a known type; ``on_message(topic, msg)`` sees each one. Returns the count."""
        if not self.publishers:
            self.prepare()
        start_wall, start_bag, count = time.monotonic(), None, 0
        for raw in read_raw(self.bag):
            if raw.msgtype not in MESSAGE_TYPES:
                continue
            msg_type, qos = MESSAGE_TYPES[raw.msgtype]
            start_bag = raw.timestamp_ns if start_bag is None else start_bag
            delay = (raw.timestamp_ns - start_bag) / 1e9 / self.rate - (time.monotonic() - start_wall)
            if delay > 0:
                time.sleep(delay)
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = divmod(raw.timestamp_ns, 1_000_000_000)
            self.clock_pub.publish(clock)
            if raw.topic not in self.publishers:
                self.publishers[raw.topic] = self.node.create_publisher(msg_type, raw.topic, qos)
            msg = deserialize_message(raw.data, msg_type)
            self.publishers[raw.topic].publish(msg)
            if on_message is not None:
                on_message(raw.topic, msg)
            count += 1
        return count
