"""How GR00T N1.7's checkpoint keys map onto ``GrootN17`` (LeRobot's ``GR00TN17`` state dict)."""

from __future__ import annotations

import re
from typing import Callable

from ..base import CheckpointKeys

LM_HEAD_KEY = "backbone.model.lm_head.weight"
EMBED_KEY = "backbone.model.model.language_model.embed_tokens.weight"

CHECKPOINT_KEYS = CheckpointKeys(
    children=("backbone.", "action_head."),
    optional=(LM_HEAD_KEY,),  # tied to the embeddings and left out on save (LeRobot); never needed
    aliases={EMBED_KEY: LM_HEAD_KEY},  # tied embeddings stored only as lm_head
)

# A Qwen3-VL folder's keys (Qwen3VLForConditionalGeneration as transformers >= 4.52 saves it, then the older
# names) -> ours under ``backbone.``.
QWEN3_VL_PREFIXES = (
    ("model.visual.", "backbone.model.model.visual."),
    ("model.language_model.", "backbone.model.model.language_model."),
    ("visual.", "backbone.model.model.visual."),
    ("model.", "backbone.model.model.language_model."),
    ("lm_head.", "backbone.model.lm_head."),
)
TEXT_LAYER = re.compile(r"language_model\.layers\.(\d+)\.")


def backbone_key_of(select_layer: int) -> Callable[[str], str | None]:
    """The rename of a Qwen3-VL folder's tensor to our key; None for text layers past ``select_layer``."""

    def rename(stored: str) -> str | None:
        for prefix, ours in QWEN3_VL_PREFIXES:
            if stored.startswith(prefix):
                name = ours + stored[len(prefix) :]
                layer = TEXT_LAYER.search(name)
                return None if layer and int(layer.group(1)) >= select_layer else name
        return None

    return rename
