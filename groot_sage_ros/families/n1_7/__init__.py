"""GR00T N1.7 (Cosmos-Reason2-2B, a Qwen3-VL, cut to 16 text layers; a 32-block alternating-attention DiT).

Everything N1.7-specific lives in this package: config schema (``config``), checkpoint keys (``keys``),
prompt and processor (``prompt``, ``processor``), modules (``backbone``, ``action_head``, ``model``), fast
regions (``fast``), the tiny writer (``tiny``) and the statistics files (``statistics``). Sources followed
are named in each module (LeRobot 0.6 ``groot_n1_7.py``, ``processor_groot.py``, ``cross_attention_dit.py``;
transformers' Qwen3-VL classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..base import FamilyModel, FastRegion, ModelFamily
from .config import ARCHITECTURES, BACKBONE_MODEL, FAMILY_NAME, MODEL_TYPE, GrootN17Config, n17_3b_config
from .keys import CHECKPOINT_KEYS, backbone_key_of
from .processor import N17Processor, ProcessorConfig, checkpoint_processor_config, pixel_values, token_facts
from .statistics import load_normalizer


class N17Family(ModelFamily):
    name = FAMILY_NAME
    keys = CHECKPOINT_KEYS
    bucket_padding_exact = True  # a causal LLM with M-RoPE from 0 per sample: pads after the prompt change nothing

    def matches(self, raw: dict[str, Any]) -> bool:
        architectures = raw.get("architectures")
        return raw.get("model_type") == MODEL_TYPE or (
            isinstance(architectures, list) and any(name in architectures for name in ARCHITECTURES)
        )

    def parse_config(self, raw: dict[str, Any], source: str = "config.json") -> GrootN17Config:
        return GrootN17Config.from_dict(raw, source)

    def feature_dim(self, config: GrootN17Config) -> int:
        return config.feature_dim

    def complete_files(self, files, config: GrootN17Config):
        """Isaac-GR00T's layout: a checkpoint whose files hold no backbone weights takes them from its
        ``model_name`` folder (Cosmos-Reason2-2B: a local folder or the Hugging Face cache, never a download),
        as ``Qwen3VLForConditionalGeneration`` saved them; the text layers past select_layer are not read."""
        if any(name.startswith("backbone.") for name in files.weight_map):
            return files  # LeRobot's layout: every weight in the GR00T checkpoint
        files.add_source(
            config.raw.get("model_name") or BACKBONE_MODEL,
            backbone_key_of(config.backbone.select_layer),
            "its files hold no backbone weights (Isaac-GR00T's layout) and its model_name folder is needed",
        )
        return files

    def build(self, config: GrootN17Config, with_action_head: bool, with_backbone: bool = True) -> FamilyModel:
        from .model import GrootN17

        return GrootN17(config, with_action_head=with_action_head, with_backbone=with_backbone)

    def processor(
        self, tokenizer: str | None = None, instruction_format: str | None = None, root: Path | None = None
    ) -> N17Processor:
        """The processor, with the image sizes and language cleaning of the checkpoint's
        processor_config.json when ``root`` has one."""
        if root is None:
            return N17Processor(
                ProcessorConfig(instruction_format=instruction_format or "formalized", tokenizer=tokenizer)
            )
        return N17Processor(checkpoint_processor_config(root, tokenizer, instruction_format))

    def token_facts(self):
        return token_facts(ProcessorConfig())

    def fast_regions(self, model: FamilyModel) -> list[FastRegion]:
        from .fast import fast_regions

        return fast_regions(model)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        return pixel_values(images)

    def normalizer(self, root: Path, embodiment: str | None, modes: dict[str, str] | None = None):
        return load_normalizer(root, embodiment, modes)

    def full_size_config(self) -> dict[str, Any]:
        return n17_3b_config()

    def write_tiny(self, out: Path, seed: int = 0, raw: dict[str, Any] | None = None, outliers: bool = False) -> Path:
        from .tiny import write_random_checkpoint, write_tiny_checkpoint

        if raw is None:
            return write_tiny_checkpoint(out, seed, outliers=outliers)
        return write_random_checkpoint(out, raw, seed, outliers=outliers)


FAMILY = N17Family()
