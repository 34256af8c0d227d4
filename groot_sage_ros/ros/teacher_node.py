"""``groot_node``: GR00T backbone features on ROS 2 topics and, optionally, the action head's chunks.

The shared lifecycle node (``feature_node.FeatureNode``) with the teacher's model: any registered GR00T
family, loaded with ``engine.load_engine`` on ``device``. With ``action_head.enabled`` it also subscribes to
``joint_states_topic`` and publishes ``~/action_chunk`` (or ``~/action_chunk/dry_run``) JointTrajectory
messages, one per frame set, when the latest joint state is fresh enough.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from ..api import FeatureEngine
from ..checkpoint.files import CheckpointError
from ..engine import RuntimeConfig, check_precision, load_engine, resolve_device
from ..serving.embodiment import EmbodimentConfig
from ..serving.node_config import TeacherNodeConfig
from .action_chunks import chunk_message
from .conversions import stamp_ns
from .feature_node import (
    FEATURES_QOS,
    FeatureNode,
    check_device,
    configure_error,
    spin_node,
)


class TeacherNode(FeatureNode):
    config_cls = TeacherNodeConfig
    executable = "groot_node"

    def __init__(self, node_name: str = "groot_node", **kwargs):
        self._joint_state: JointState | None = None
        self._embodiment: EmbodimentConfig | None = None
        self._policy = None  # the engine's ActionPolicy for the embodiment
        super().__init__(node_name, **kwargs)

    @property
    def model_id(self) -> str:
        return self.config.checkpoint

    @property
    def action_head_enabled(self) -> bool:
        return bool(self.config is not None and self.config.action_head_enabled)

    def _load_model(self, cfg: TeacherNodeConfig) -> FeatureEngine:
        if cfg.action_head_enabled and not cfg.action_head_embodiment_config:
            raise ValueError("parameter 'action_head.embodiment_config': empty; expected an embodiment YAML "
                             "such as config/embodiments/so100.yaml")  # fmt: skip
        if not cfg.checkpoint:
            raise ValueError("parameter 'checkpoint': empty; expected a checkpoint folder or a cached repo id")
        check_device(cfg.device)
        try:
            check_precision(cfg.precision, resolve_device(cfg.device))
        except ValueError as err:
            raise ValueError(f"parameter 'precision': {err}") from None
        try:
            engine = load_engine(cfg.checkpoint, device=cfg.device, dtype=cfg.dtype, tokenizer=cfg.tokenizer or None,
                                 instruction_format=cfg.instruction_format, action_head=cfg.action_head_enabled,
                                 runtime=RuntimeConfig.from_attributes(cfg), warmup=False)  # fmt: skip
            # Compile and capture for this node's cameras and default instruction before the first frame.
            engine.warmup(cameras=len(cfg.camera_topics), instruction=cfg.default_instruction)
        except (CheckpointError, OSError) as err:
            raise ValueError(f"parameter 'checkpoint': {configure_error(err)}") from None
        if cfg.action_head_enabled:
            try:
                self._embodiment = EmbodimentConfig.from_yaml(cfg.action_head_embodiment_config)
                self._policy = engine.action_policy(self._embodiment.embodiment_tag, self._embodiment.normalization)
            except (ValueError, OSError) as err:
                raise ValueError(f"parameter 'action_head.embodiment_config': {configure_error(err)}") from None
        return engine

    def _configure_outputs(self) -> list:
        if not self.action_head_enabled:
            return []
        topic = "~/action_chunk/dry_run" if self.config.action_head_dry_run else "~/action_chunk"
        self._chunk_pub = self.create_lifecycle_publisher(JointTrajectory, topic, FEATURES_QOS)
        return [self._chunk_pub]

    def _subscribe_extra(self) -> list:
        if not self.action_head_enabled:
            return []
        return [self.create_subscription(JointState, self.config.joint_states_topic, self._on_joint_state,
                                         qos_profile_sensor_data)]  # fmt: skip

    def _on_joint_state(self, msg: JointState) -> None:
        self._joint_state = msg  # the worker reads the latest one when a chunk is due

    def _after_features(self, stamp: int, features: np.ndarray, result, header) -> None:
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


def main(args=None) -> int:
    return spin_node(TeacherNode, args)


if __name__ == "__main__":
    sys.exit(main())
