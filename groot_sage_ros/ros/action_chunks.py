"""Action chunks on ROS: the ``ActionChunks`` part groot_node and sage_node hold, and the message building.

With ``action_head.enabled`` a node subscribes to ``joint_states_topic`` and, after each frame set's
features, runs the action head on them with the latest joint state (when it is at most
``action_head.max_state_age_s`` old) and publishes a ``trajectory_msgs/JointTrajectory`` on
``~/action_chunk`` (or ``~/action_chunk/dry_run``): one point per step of the chunk, in the embodiment YAML's
joint order, clipped to its limits.

With ``action_head.execution_horizon`` > 0 or ``action_head.rtc`` on, chunks follow the execution schedule
(``serving/chunk_schedule.py``): a chunk only when one is due, each continuing the last (real-time
chunking in the head), stamped with the time its first published step is due, the committed steps left out.
"""

from __future__ import annotations

import time

import numpy as np
from builtin_interfaces.msg import Duration, Time
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ..api import ChunkPrefix
from ..serving.chunk_schedule import ChunkSchedule
from ..serving.embodiment import EmbodimentConfig
from ..serving.stats import LatencyStats
from .conversions import stamp_ns
from .feature_node import FEATURES_QOS, NodePart, configure_error


def chunk_message(
    header, joint_names: list[str], positions: np.ndarray, control_rate_hz: float, first: int = 1
) -> JointTrajectory:
    """(H, J) joint positions -> a trajectory whose k-th point is due (k + first) / control_rate_hz after
    ``header``'s stamp: the camera frame the chunk was computed from (``first`` 1), or, on the execution
    schedule, the time its first point is due (``first`` 0)."""
    trajectory = JointTrajectory(header=header, joint_names=list(joint_names))
    for k, row in enumerate(positions):
        seconds = (k + first) / control_rate_hz
        due = Duration(sec=int(seconds), nanosec=int(seconds % 1 * 1e9))
        trajectory.points.append(JointTrajectoryPoint(positions=[float(v) for v in row], time_from_start=due))
    return trajectory


def check_action_params(cfg) -> None:
    """ValueError naming the parameter when the action head is on without an embodiment."""
    if cfg.action_head_enabled and not cfg.action_head_embodiment_config:
        raise ValueError(
            "parameter 'action_head.embodiment_config': empty; expected an embodiment YAML "
            "such as config/embodiments/so100.yaml"
        )


class ActionChunks(NodePart):
    """The action head's chunks, a part of a feature node with ``action_head.enabled``: ``attach`` gives it
    the engine whose head runs (the teacher itself, or the teacher's head for a student) at each load; it
    publishes one chunk after each frame set's features."""

    def __init__(self, node):
        self.node = node  # its config, clock, counters, latency and warnings
        self.joint_state: JointState | None = None
        self.embodiment: EmbodimentConfig | None = None
        self.head = None  # the engine whose action head runs
        self.policy = None  # its ActionPolicy for the embodiment
        self.publisher = None
        self.schedule: ChunkSchedule | None = None  # the execution schedule, when it is on
        self.jumps = LatencyStats()  # the largest joint change at each chunk switch ("boundary" stage)

    def attach(self, head_engine) -> None:
        """The embodiment YAML and ``head_engine``'s policy for it, or ValueError naming the parameter."""
        cfg, self.head = self.node.config, head_engine
        try:
            self.embodiment = EmbodimentConfig.from_yaml(cfg.action_head_embodiment_config)
            self.policy = head_engine.action_policy(self.embodiment.embodiment_tag, self.embodiment.normalization)
        except (ValueError, OSError) as err:
            raise ValueError(f"parameter 'action_head.embodiment_config': {configure_error(err)}") from None
        scheduled = cfg.action_head_execution_horizon > 0 or cfg.action_head_rtc != "off"
        self.schedule = (
            ChunkSchedule(
                cfg.action_head_control_rate_hz,
                cfg.action_head_execution_horizon,
                cfg.action_head_delay_steps,
                guided_steps=cfg.action_head_rtc_guided_steps,
            )
            if scheduled
            else None
        )

    def release(self) -> None:
        self.head = self.policy = self.schedule = None

    def diagnostics(self) -> dict:
        if self.schedule is None:
            return {}
        p95 = self.schedule.latency_p95_ms()
        jumps = self.jumps.percentiles().get("boundary")
        return {
            "rtc": self.node.config.action_head_rtc,
            "rtc_delay_steps": self.schedule.delay_steps(self.head.action_horizon) if self.head else "n/a",
            "chunk_latency_ms_p95": f"{p95:.1f}" if p95 is not None else "n/a",
            "chunk_boundary_jump_p50": f"{jumps[0]:.4f}" if jumps else "n/a",
            "chunk_boundary_jump_p95": f"{jumps[1]:.4f}" if jumps else "n/a",
        }

    def outputs(self) -> list:
        topic = "~/action_chunk/dry_run" if self.node.config.action_head_dry_run else "~/action_chunk"
        self.publisher = self.node.create_lifecycle_publisher(JointTrajectory, topic, FEATURES_QOS)
        return [self.publisher]

    def subscriptions(self) -> list:
        return [
            self.node.create_subscription(
                JointState, self.node.config.joint_states_topic, self.on_joint_state, qos_profile_sensor_data
            )
        ]

    def on_joint_state(self, msg: JointState) -> None:
        self.joint_state = msg  # the worker reads the latest one when a chunk is due

    def after_features(self, stamp: int, features: np.ndarray, result, header) -> None:
        tick = time.perf_counter()
        self.publish_chunk(result, header)
        self.node.latency.add("action", (time.perf_counter() - tick) * 1000.0)

    def warm_up(self, result) -> None:
        """One chunk from the warm-up's features and a zero state, published nowhere; with RTC on, one that
        continues it too (guided mode's backward passes are compiled and captured here, not on a frame)."""
        state = self.policy.zero_state()
        self.policy.chunk(result, state, 0)
        rtc = self.node.config.action_head_rtc
        if rtc != "off":
            previous = self.policy.normalised_chunk(result, state, 0)  # (H, A)
            horizon = previous.shape[0]
            prefix = ChunkPrefix(previous, 1, horizon, rtc, guided_steps=self.schedule.guided_steps)
            self.policy.normalised_chunk(result, state, 0, prefix=prefix)

    def publish_chunk(self, result, header) -> None:
        """Run the action head on this frame set's features and publish a JointTrajectory, or skip (counted)."""
        node, cfg, joint_state = self.node, self.node.config, self.joint_state
        if joint_state is None or node._too_old(stamp_ns(joint_state.header.stamp), cfg.action_head_max_state_age_s):
            node.counters.add("action_skipped_stale_state")
            node._warn(
                "stale_state",
                f"no action chunk: no joint state on {cfg.joint_states_topic} newer than "
                f"action_head.max_state_age_s={cfg.action_head_max_state_age_s}",
            )
            return
        try:
            state = self.embodiment.state_from_joints(list(joint_state.name), list(joint_state.position))
            seed = cfg.action_head_seed if cfg.action_head_seed >= 0 else None
            if self.schedule is not None:
                self.publish_scheduled(result, header, state, seed)
                return
            actions = self.policy.chunk(result, state, seed)  # key -> (H, width), robot units
        except ValueError as err:
            node.counters.add("action_skipped_bad_state")
            node._warn("bad_state", f"no action chunk: {err}")
            return
        positions = self.clipped_positions(actions)
        self.publisher.publish(
            chunk_message(header, self.embodiment.action_joints, positions, cfg.action_head_control_rate_hz)
        )
        node.counters.add("action_chunks")

    def clipped_positions(self, actions: dict[str, np.ndarray]) -> np.ndarray:
        """Robot-unit actions -> (H, J) joint positions within the embodiment's limits (clipping counted)."""
        positions, clipped = self.embodiment.joint_positions(actions)  # (H, J)
        if clipped:
            self.node.counters.add("action_values_clipped", clipped)
            self.node._warn("clipped", f"{clipped} action values clipped to the embodiment's joint limits")
        return positions

    def publish_scheduled(self, result, header, state: dict[str, np.ndarray], seed: int | None) -> None:
        """A chunk on the execution schedule: only when due, continuing the last one (RTC), its committed
        steps left out and its stamp the time its first published step is due."""
        node, cfg, schedule = self.node, self.node.config, self.schedule
        stamp = stamp_ns(header.stamp)
        planned = schedule.plan(self.policy, result, state, stamp, seed, cfg.action_head_rtc)
        if planned is None:
            node.counters.add("action_not_due")
            return
        if not planned.frozen_kept:
            node.counters.add("rtc_frozen_violations")
        positions = self.clipped_positions(planned.actions)  # (H', J)
        jump = schedule.boundary_jump(stamp, planned.delay, positions)
        if jump is not None:
            self.jumps.add("boundary", jump)
        due = schedule.first_due_ns(stamp, planned.delay)
        stamped = type(header)(stamp=Time(sec=due // 10**9, nanosec=due % 10**9), frame_id=header.frame_id)
        joints, rate = self.embodiment.action_joints, cfg.action_head_control_rate_hz
        self.publisher.publish(chunk_message(stamped, joints, positions[planned.delay :], rate, first=0))
        node.counters.add("action_chunks")
        schedule.commit(stamp, planned, positions, state, node.get_clock().now().nanoseconds)
