"""GR00T N1.5 (Eagle 2.5 VL backbone: SigLIP + Qwen3-1.7B truncated; flow-matching DiT action head).

Everything N1.5-specific lives in this package: config schema (``config``), checkpoint keys (``keys``),
prompt and processor (``prompt``, ``processor``), modules (``backbone``, ``action_head``, ``model``), fast
regions (``fast``), the tiny writer (``tiny``) and where statistics live (``statistics``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..base import FamilyModel, FastRegion, ModelFamily
from ..common.normalization import EmbodimentNormalizer
from .config import ARCHITECTURE, FAMILY_NAME, MODEL_TYPE, GrootConfig, n15_3b_config
from .keys import CHECKPOINT_KEYS
from .processor import N15Processor, ProcessorConfig, pixel_values, token_facts
from .statistics import STATISTICS_FILE, embodiment_id


class N15Family(ModelFamily):
    name = FAMILY_NAME
    keys = CHECKPOINT_KEYS
    bucket_padding_exact = True  # a causal LLM: real tokens never attend to the pads after them

    def matches(self, raw: dict[str, Any]) -> bool:
        architectures = raw.get("architectures")
        return raw.get("model_type") == MODEL_TYPE or (
            isinstance(architectures, list) and ARCHITECTURE in architectures
        )

    def parse_config(self, raw: dict[str, Any], source: str = "config.json") -> GrootConfig:
        return GrootConfig.from_dict(raw, source)

    def feature_dim(self, config: GrootConfig) -> int:
        return config.feature_dim

    def build(self, config: GrootConfig, with_action_head: bool, with_backbone: bool = True) -> FamilyModel:
        from .model import GrootN15

        return GrootN15(config, with_action_head=with_action_head, with_backbone=with_backbone)

    def processor(
        self, tokenizer: str | None = None, instruction_format: str | None = None, root: Path | None = None
    ) -> N15Processor:
        return N15Processor(
            ProcessorConfig(
                tokenizer=tokenizer, **({"instruction_format": instruction_format} if instruction_format else {})
            )
        )

    def token_facts(self):
        return token_facts(ProcessorConfig())

    def fast_regions(self, model: FamilyModel) -> list[FastRegion]:
        from .fast import fast_regions

        return fast_regions(model)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        return pixel_values(images)

    def normalizer(self, root: Path, embodiment: str | None, modes: dict[str, str] | None = None):
        return EmbodimentNormalizer.from_metadata(root / STATISTICS_FILE, embodiment, embodiment_id, modes)

    def full_size_config(self) -> dict[str, Any]:
        return n15_3b_config()

    def write_tiny(self, out: Path, seed: int = 0, raw: dict[str, Any] | None = None, outliers: bool = False) -> Path:
        from .tiny import write_random_checkpoint, write_tiny_checkpoint

        if raw is None:
            return write_tiny_checkpoint(out, seed, outliers=outliers)
        return write_random_checkpoint(out, raw, seed, outliers=outliers)


FAMILY = N15Family()
