"""``groot_node``: GR00T backbone features on ROS 2 topics and, optionally, the action head's chunks.

The shared lifecycle node (``feature_node.FeatureNode``) with the teacher's model: any registered GR00T
family, loaded with ``engine.load_engine`` on ``device``. With ``action_head.enabled`` it also publishes
action chunks (the ``action_chunks.ActionChunks`` part it holds).
"""

from __future__ import annotations

import sys

from ..api import FeatureEngine
from ..checkpoint.files import CheckpointError
from ..engine import RuntimeConfig, check_precision, load_engine, resolve_device
from ..serving.node_config import TeacherNodeConfig
from .action_chunks import ActionChunks, check_action_params
from .feature_node import FeatureNode, NodePart, check_default_instruction, check_device, configure_error
from .node_process import spin_node


class TeacherNode(FeatureNode):
    config_cls = TeacherNodeConfig
    executable = "groot_node"

    def __init__(self, node_name: str = "groot_node", **kwargs):
        self.chunks: ActionChunks | None = None
        super().__init__(node_name, **kwargs)

    @property
    def model_id(self) -> str:
        return self.config.checkpoint

    def make_parts(self, cfg: TeacherNodeConfig) -> list[NodePart]:
        check_action_params(cfg)
        self.chunks = ActionChunks(self) if cfg.action_head_enabled else None
        return [self.chunks] if self.chunks is not None else []

    def load_model(self, cfg: TeacherNodeConfig) -> FeatureEngine:
        if not cfg.checkpoint:
            raise ValueError("parameter 'checkpoint': empty; expected a checkpoint folder or a cached repo id")
        check_device(cfg.device)
        try:
            check_precision(cfg.precision, resolve_device(cfg.device))
        except ValueError as err:
            raise ValueError(f"parameter 'precision': {err}") from None
        try:
            engine = load_engine(
                cfg.checkpoint,
                device=cfg.device,
                dtype=cfg.dtype,
                tokenizer=cfg.tokenizer or None,
                instruction_format=cfg.instruction_format,
                action_head=cfg.action_head_enabled,
                runtime=RuntimeConfig.from_attributes(cfg),
                warmup=False,
            )
            check_default_instruction(cfg, engine)
            # Compile and capture for this node's cameras and default instruction before the first frame.
            engine.warmup(cameras=len(cfg.camera_topics), instruction=cfg.default_instruction)
        except (CheckpointError, OSError) as err:
            raise ValueError(f"parameter 'checkpoint': {configure_error(err)}") from None
        if self.chunks is not None:
            self.chunks.attach(engine)  # the teacher's own head
        return engine


def main(args=None) -> int:
    return spin_node(TeacherNode, args)


if __name__ == "__main__":
    sys.exit(main())
