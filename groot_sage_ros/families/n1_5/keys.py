"""How GR00T N1.5's checkpoint keys map onto ``GrootN15``."""

from __future__ import annotations

from ..base import CheckpointKeys

LM_HEAD_KEY = "backbone.eagle_model.language_model.lm_head.weight"
EMBED_KEY = "backbone.eagle_model.language_model.model.embed_tokens.weight"

CHECKPOINT_KEYS = CheckpointKeys(
    children=("backbone.", "action_head."),  # GR00T_N1_5's top-level children
    # Present in some checkpoints, absent in others; never needed: the tied LM head (we compute no logits)
    # and SigLIP's attention-pooling head (its output is discarded by Eagle).
    optional=(LM_HEAD_KEY,),
    optional_prefixes=("backbone.eagle_model.vision_model.vision_model.head.",),
    aliases={EMBED_KEY: LM_HEAD_KEY},  # tied embeddings stored only as lm_head
)
