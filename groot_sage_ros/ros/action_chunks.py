"""Action chunks on ROS: the ``ActionChunks`` part of groot_node and sage_node, and the message building.

With ``action_head.enabled`` a node subscribes to ``joint_states_topic`` and, after each frame set's
features, runs the action head on them with the latest joint state (when it is at most
``action_head.max_state_age_s`` old) and publishes a ``trajectory_msgs/JointTrajectory`` on
``~/action_chunk`` (or ``~/action_chunk/dry_run``): one point per step of the chunk, in the embodiment YAML's
joint order, clipped to its limits.
"""

from __future__ import annotations

import time

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ..serving.embodiment import EmbodimentConfig
from .conversions import stamp_ns
from .feature_node import FEATURES_QOS, configure_error


def chunk_message(header, joint_names: list[str], positions: np.ndarray, control_rate_hz: float) -> JointTrajectory:
    """(H, J) joint positions -> a trajectory whose k-th point is due (k + 1) / control_rate_hz after ``header``'s
    stamp (the camera frame the chunk was computed from)."""
    trajectory = JointTrajectory(header=header, joint_names=list(joint_names))
    for k, row in enumerate(positions):
        seconds = (k + 1) / control_rate_hz
        due = Duration(sec=int(seconds), nanosec=int(seconds % 1 * 1e9))
        trajectory.points.append(JointTrajectoryPoint(positions=[float(v) for v in row], time_from_start=due))
    return trajectory


class ActionChunks:
    """Mixin for a ``FeatureNode``: the action head's chunks. ``_load_policy(engine)`` at configure gives it
    the engine whose head to run (the teacher itself, or the teacher's head for a student)."""

    _joint_state: JointState | None = None
    _embodiment: EmbodimentConfig | None = None
    _policy = None  # the engine's ActionPolicy for the embodiment
    _chunk_pub = None

    @property
    def action_head_enabled(self) -> bool:
        return bool(self.config is not None and self.config.action_head_enabled)

    def _check_action_params(self, cfg) -> None:
        if cfg.action_head_enabled and not cfg.action_head_embodiment_config:
            raise ValueError("parameter 'action_head.embodiment_config': empty; expected an embodiment YAML "
                             "such as config/embodiments/so100.yaml")  # fmt: skip

    def _load_policy(self, cfg, head_engine) -> None:
        """The embodiment YAML and ``head_engine``'s policy for it, or ValueError naming the parameter."""
        try:
            self._embodiment = EmbodimentConfig.from_yaml(cfg.action_head_embodiment_config)
            self._policy = head_engine.action_policy(self._embodiment.embodiment_tag, self._embodiment.normalization)
        except (ValueError, OSError) as err:
            raise ValueError(f"parameter 'action_head.embodiment_config': {configure_error(err)}") from None

    def _configure_outputs(self) -> list:
        if not self.action_head_enabled:
            return super()._configure_outputs()
        topic = "~/action_chunk/dry_run" if self.config.action_head_dry_run else "~/action_chunk"
        self._chunk_pub = self.create_lifecycle_publisher(JointTrajectory, topic, FEATURES_QOS)
        return [*super()._configure_outputs(), self._chunk_pub]

    def _subscribe_extra(self) -> list:
        subs = super()._subscribe_extra()
        if self.action_head_enabled:
            subs.append(self.create_subscription(JointState, self.config.joint_states_topic, self._on_joint_state,
                                                 qos_profile_sensor_data))  # fmt: skip
        return subs

    def _on_joint_state(self, msg: JointState) -> None:
        self._joint_state = msg  # the worker reads the latest one when a chunk is due

    def _after_features(self, stamp: int, features: np.ndarray, result, header) -> None:
        super()._after_features(stamp, features, result, header)
        if self.action_head_enabled:
            tick = time.perf_counter()
            self._publish_chunk(result, header)
            self.latency.add("action", (time.perf_counter() - tick) * 1000.0)

    def _publish_chunk(self, result, header) -> None:
        """Run the action head on this frame set's features and publish a JointTrajectory, or skip (counted)."""
        cfg, joint_state = self.config, self._joint_state
        if joint_state is None or self._too_old(stamp_ns(joint_state.header.stamp), cfg.action_head_max_state_age_s):
            self.counters.add("action_skipped_stale_state")
            self._warn("stale_state", f"no action chunk: no joint state on {cfg.joint_states_topic} newer than "
                       f"action_head.max_state_age_s={cfg.action_head_max_state_age_s}")  # fmt: skip
            return
        try:
            state = self._embodiment.state_from_joints(list(joint_state.name), list(joint_state.position))
            seed = cfg.action_head_seed if cfg.action_head_seed >= 0 else None
            actions = self._policy.chunk(result, state, seed)  # key -> (H, width), robot units
        except ValueError as err:
            self.counters.add("action_skipped_bad_state")
            self._warn("bad_state", f"no action chunk: {err}")
            return
        positions, clipped = self._embodiment.joint_positions(actions)  # (H, J)
        if clipped:
            self.counters.add("action_values_clipped", clipped)
            self._warn("clipped", f"{clipped} action values clipped to the embodiment's joint limits")
        self._chunk_pub.publish(chunk_message(header, self._embodiment.action_joints, positions,
                                              cfg.action_head_control_rate_hz))  # fmt: skip
        self.counters.add("action_chunks")
