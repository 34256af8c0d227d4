"""``sage_node``: the distilled SAGE student behind groot_node's topic contract.

Same inputs, same ``~/features`` and ``~/features/layout`` (the teacher's width), same scheduling, bad-input
handling, lifecycle and diagnostics as ``groot_node`` (it is the same node with another model). With
``teacher_features_topic`` set it also pairs its outputs with the teacher's by stamp and reports the live
per-token cosine fidelity in its diagnostics. With ``action_head.enabled`` the teacher's action head (loaded
from ``action_head.checkpoint`` without its backbone) runs on the student's features and publishes chunks
with groot_node's contract, dry run, limits and state-age guard (``action_chunks.ActionChunks``).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict, deque

import numpy as np
from sensor_msgs.msg import Image

from ..api import FeatureEngine
from ..engine import is_student, load_action_head, load_engine
from ..serving.node_config import StudentNodeConfig
from .action_chunks import ActionChunks
from .conversions import BadImage, image_msg_to_features, stamp_ns
from .feature_node import (
    FEATURES_QOS,
    FeatureNode,
    check_default_instruction,
    check_device,
    configure_error,
    spin_node,
)

PENDING = 64  # unmatched outputs kept per side while waiting for the other


class StudentNode(ActionChunks, FeatureNode):
    config_cls = StudentNodeConfig
    executable = "sage_node"

    def __init__(self, node_name: str = "sage_node", **kwargs):
        self._mine: OrderedDict[int, np.ndarray] = OrderedDict()
        self._theirs: OrderedDict[int, np.ndarray] = OrderedDict()
        self._fidelity: deque[float] = deque(maxlen=200)
        self._pair_lock = threading.Lock()
        self._head: FeatureEngine | None = None  # the teacher's action head, with action_head.enabled
        super().__init__(node_name, **kwargs)

    @property
    def model_id(self) -> str:
        return self.config.student

    def _load_model(self, cfg: StudentNodeConfig) -> FeatureEngine:
        if not cfg.student:
            raise ValueError("parameter 'student': empty; expected a student.safetensors from groot-sage distill")
        check_device(cfg.device)
        self._check_action_params(cfg)
        if not is_student(cfg.student):
            raise ValueError(f"parameter 'student': {cfg.student} is a teacher checkpoint folder; expected a "
                             "student.safetensors from groot-sage distill (or its run folder)")  # fmt: skip
        try:
            student = load_engine(cfg.student, device=cfg.device, dtype=cfg.dtype)
        except (ValueError, RuntimeError, OSError) as err:
            raise ValueError(f"parameter 'student': {configure_error(err)}") from None
        check_default_instruction(cfg, student)
        if cfg.action_head_enabled:
            self._head = self._load_head(cfg, student)
            self._load_policy(cfg, self._head)
        return student

    def _load_head(self, cfg: StudentNodeConfig, student: FeatureEngine) -> FeatureEngine:
        """The teacher's action head without its backbone, checked against the student's teacher."""
        if not cfg.action_head_checkpoint:
            raise ValueError("parameter 'action_head.checkpoint': empty; expected the teacher checkpoint whose action "
                             "head runs on the student's features")  # fmt: skip
        try:
            head = load_action_head(cfg.action_head_checkpoint, device=cfg.device, dtype=cfg.dtype, warmup=False)
        except (ValueError, RuntimeError, OSError) as err:
            raise ValueError(f"parameter 'action_head.checkpoint': {configure_error(err)}") from None
        if head.feature_dim != student.feature_dim or head.facts.family != student.facts.family:
            raise ValueError(f"parameter 'action_head.checkpoint': its head reads {head.feature_dim}-d "
                             f"{head.facts.family} features; the student gives {student.feature_dim}-d "
                             f"{student.facts.family} features")  # fmt: skip
        head.warmup(cameras=len(cfg.camera_topics), instruction=cfg.default_instruction)
        return head

    def _release_model(self) -> None:
        self._head = None
        super()._release_model()

    def _subscribe_extra(self) -> list:
        subs = super()._subscribe_extra()
        if self.config.teacher_features_topic:
            subs.append(self.create_subscription(Image, self.config.teacher_features_topic, self._on_teacher_features,
                                                 FEATURES_QOS))  # fmt: skip
        return subs

    def _on_teacher_features(self, msg: Image) -> None:
        try:
            features = image_msg_to_features(msg)
        except BadImage as err:
            self._warn("teacher_features", f"teacher features ignored: {err}")
            return
        self._pair(stamp_ns(msg.header.stamp), theirs=features)

    def _after_features(self, stamp: int, features: np.ndarray, result, header) -> None:
        super()._after_features(stamp, features, result, header)  # the action chunk, when enabled
        if self.config.teacher_features_topic:
            self._pair(stamp, mine=features)

    def _pair(self, stamp: int, mine: np.ndarray | None = None, theirs: np.ndarray | None = None) -> None:
        with self._pair_lock:
            if mine is not None:
                self._mine[stamp] = mine
            if theirs is not None:
                self._theirs[stamp] = theirs
            if stamp in self._mine and stamp in self._theirs:
                a, b = self._mine.pop(stamp), self._theirs.pop(stamp)
                if a.shape != b.shape:
                    self.counters.add("fidelity_shape_mismatch")
                    return
                cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)
                self._fidelity.append(float(cosine.mean()))
                self.counters.add("fidelity_pairs")
            for pending in (self._mine, self._theirs):
                while len(pending) > PENDING:
                    pending.popitem(last=False)

    def _extra_diagnostics(self) -> dict:
        if not self.config.teacher_features_topic:
            return {}
        with self._pair_lock:
            values = list(self._fidelity)
        return {"teacher_features_topic": self.config.teacher_features_topic,
                "fidelity_cosine_mean": f"{np.mean(values):.4f}" if values else "n/a"}  # fmt: skip


def main(args=None) -> int:
    return spin_node(StudentNode, args)


if __name__ == "__main__":
    sys.exit(main())
