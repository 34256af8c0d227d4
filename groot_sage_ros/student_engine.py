"""``StudentExtractor``: the SAGE student behind the same API as ``FeatureExtractor`` (same processor)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import parse_dtype
from .cuda_graphs import GraphCache
from .engine import FeatureResult, resolve_device
from .processor import ModelInputs, Processor, ProcessorConfig
from .student_checkpoint import load_student


class StudentExtractor:
    """Teacher-width features predicted by a distilled student, for the nodes and for evaluation."""

    def __init__(self, model, processor: Processor, device: torch.device, dtype: torch.dtype, model_id: str,
                 cuda_graphs: bool = True):  # fmt: skip
        self.model, self.processor, self.device, self.dtype, self.model_id = model, processor, device, dtype, model_id
        # The student is small enough that eager PyTorch is bound by kernel launches: on CUDA, batch-1 calls
        # replay a CUDA graph captured once per (sequence length, cameras) shape.
        self.cuda_graphs = cuda_graphs and device.type == "cuda"
        self._graphs = GraphCache(self.model.features, device, warmup_calls=3) if self.cuda_graphs else None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", dtype: str = "float32") -> "StudentExtractor":
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
        pixels = inputs.pixel_values.to(self.dtype)
        if self.cuda_graphs and inputs.input_ids.shape[0] == 1:
            features = self._graphs(inputs.input_ids, pixels)
        else:
            features = self.model.features(inputs.input_ids, pixels)  # (B, L, D)
        return FeatureResult(features, inputs.attention_mask, inputs.layouts, inputs.images)

    def extract(self, images: Sequence[np.ndarray], instruction: str) -> FeatureResult:
        return self.forward(self.prepare([(images, instruction)]))
