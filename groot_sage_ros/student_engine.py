"""``StudentExtractor``: the SAGE student behind the same API as ``FeatureExtractor`` (same processor)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import parse_dtype
from .engine import FeatureResult, resolve_device
from .processor import ModelInputs, Processor, ProcessorConfig


class StudentExtractor:
    """Teacher-width features predicted by a distilled student, for the nodes and for evaluation."""

    def __init__(self, model, processor: Processor, device: torch.device, dtype: torch.dtype, model_id: str):
        self.model, self.processor, self.device, self.dtype, self.model_id = model, processor, device, dtype, model_id

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", dtype: str = "float32") -> "StudentExtractor":
        from .offline.distill import load_student

        torch_device, torch_dtype = resolve_device(device), parse_dtype(dtype, "dtype")
        model, _ = load_student(path, "cpu")
        model = model.to(device=torch_device, dtype=torch_dtype).eval().requires_grad_(False)
        tokenizer = model.cfg.tokenizer if model.cfg.tokenizer != "qwen-tiktoken" else None
        return cls(model, Processor(ProcessorConfig(tokenizer=tokenizer)), torch_device, torch_dtype, str(path))

    @property
    def feature_dim(self) -> int:
        return self.model.cfg.teacher_dim

    def prepare(self, frame_sets: Sequence[tuple[Sequence[np.ndarray], str]]) -> ModelInputs:
        return self.processor(frame_sets, device=self.device)

    @torch.inference_mode()
    def forward(self, inputs: ModelInputs) -> FeatureResult:
        features = self.model.features(inputs.input_ids, inputs.pixel_values.to(self.dtype))  # (B, L, D)
        return FeatureResult(features, inputs.attention_mask, inputs.layouts, inputs.images)

    def extract(self, images: Sequence[np.ndarray], instruction: str) -> FeatureResult:
        return self.forward(self.prepare([(images, instruction)]))
