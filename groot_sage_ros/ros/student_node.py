"""``sage_node``: the distilled SAGE student behind groot_node's topic contract.

Same inputs, same ``~/features`` and ``~/features/layout`` (the teacher's width), same scheduling, bad-input
handling, lifecycle and diagnostics as ``groot_node`` (it is the same node with another model). With
``teacher_features_topic`` set it also pairs its outputs with the teacher's by stamp and reports the live
per-token cosine fidelity in its diagnostics. With ``action_head.enabled`` the teacher's action head (loaded
from ``action_head.checkpoint`` without its backbone) runs on the student's features and publishes chunks
with groot_node's contract, dry run, limits and state-age guard. Both are parts the node holds
(``action_chunks.ActionChunks``, ``fidelity.FidelityPairing``).
"""

from __future__ import annotations

import sys

from ..api import FeatureEngine
from ..engine import is_student, load_action_head, load_engine
from ..serving.node_config import StudentNodeConfig
from .action_chunks import ActionChunks, check_action_params
from .feature_node import FeatureNode, NodePart, check_default_instruction, check_device, configure_error
from .fidelity import FidelityPairing
from .node_process import spin_node


class StudentNode(FeatureNode):
    config_cls = StudentNodeConfig
    executable = "sage_node"

    def __init__(self, node_name: str = "sage_node", **kwargs):
        self.chunks: ActionChunks | None = None
        self.fidelity: FidelityPairing | None = None
        super().__init__(node_name, **kwargs)

    @property
    def model_id(self) -> str:
        return self.config.student

    def make_parts(self, cfg: StudentNodeConfig) -> list[NodePart]:
        check_action_params(cfg)
        self.chunks = ActionChunks(self) if cfg.action_head_enabled else None
        self.fidelity = FidelityPairing(self) if cfg.teacher_features_topic else None
        return [part for part in (self.chunks, self.fidelity) if part is not None]

    def load_model(self, cfg: StudentNodeConfig) -> FeatureEngine:
        if not cfg.student:
            raise ValueError("parameter 'student': empty; expected a student.safetensors from groot-sage distill")
        check_device(cfg.device)
        if not is_student(cfg.student):
            raise ValueError(
                f"parameter 'student': {cfg.student} is a teacher checkpoint folder; expected a "
                "student.safetensors from groot-sage distill (or its run folder)"
            )
        try:
            student = load_engine(cfg.student, device=cfg.device, dtype=cfg.dtype)
        except (ValueError, RuntimeError, OSError) as err:
            raise ValueError(f"parameter 'student': {configure_error(err)}") from None
        check_default_instruction(cfg, student)
        if self.chunks is not None:
            self.chunks.attach(self.load_head(cfg, student))
        return student

    def load_head(self, cfg: StudentNodeConfig, student: FeatureEngine) -> FeatureEngine:
        """The teacher's action head without its backbone, checked against the student's teacher."""
        if not cfg.action_head_checkpoint:
            raise ValueError(
                "parameter 'action_head.checkpoint': empty; expected the teacher checkpoint whose action "
                "head runs on the student's features"
            )
        try:
            head = load_action_head(cfg.action_head_checkpoint, device=cfg.device, dtype=cfg.dtype, warmup=False)
        except (ValueError, RuntimeError, OSError) as err:
            raise ValueError(f"parameter 'action_head.checkpoint': {configure_error(err)}") from None
        if head.feature_dim != student.feature_dim or head.facts.family != student.facts.family:
            raise ValueError(
                f"parameter 'action_head.checkpoint': its head reads {head.feature_dim}-d "
                f"{head.facts.family} features; the student gives {student.feature_dim}-d "
                f"{student.facts.family} features"
            )
        head.warmup(cameras=len(cfg.camera_topics), instruction=cfg.default_instruction)
        return head


def main(args=None) -> int:
    return spin_node(StudentNode, args)


if __name__ == "__main__":
    sys.exit(main())
