"""``StudentEngine``: the SAGE student behind the ``FeatureEngine`` contract (the teacher family's processor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..api import FeatureResult, ModelInputs, TokenFacts
from ..engine.runtime import parse_dtype, resolve_device
from ..families import by_name
from ..fastpath.cuda_graphs import GraphCache
from .checkpoint import load_student

NO_HEAD = "the student engine has no action head; engine.load_action_head gives the teacher's, for its features"


class StudentEngine:
    """Teacher-width features predicted by a distilled student, for the nodes and for evaluation."""

    has_action_head = False  # the teacher's head behind the student: issue 20

    def __init__(
        self,
        model,
        family,
        processor,
        device: torch.device,
        dtype: torch.dtype,
        model_id: str,
        cuda_graphs: bool = True,
    ):
        self.model, self.family, self.processor = model, family, processor
        self.device, self.dtype, self.model_id = device, dtype, model_id
        # The student is small enough that eager PyTorch is bound by kernel launches: on CUDA, batch-1 calls
        # replay a CUDA graph captured once per (sequence length, cameras) shape.
        self.cuda_graphs = cuda_graphs and device.type == "cuda"
        self._graphs = GraphCache(self.model.features, device, warmup_calls=3) if self.cuda_graphs else None
        self.start_seconds = 0.0

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", dtype: str = "float32") -> "StudentEngine":
        torch_device, torch_dtype = resolve_device(device), parse_dtype(dtype, "dtype")
        model, _ = load_student(path, "cpu")
        model = model.to(device=torch_device, dtype=torch_dtype).eval().requires_grad_(False)
        family = by_name(model.cfg.facts.family, f"{path}: tokens.family")
        tokenizer = model.cfg.tokenizer if model.cfg.tokenizer != "qwen-tiktoken" else None
        return cls(model, family, family.processor(tokenizer=tokenizer), torch_device, torch_dtype, str(path))

    @property
    def facts(self) -> TokenFacts:
        return self.model.cfg.facts

    @property
    def feature_dim(self) -> int:
        return self.model.cfg.teacher_dim

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def capture_seconds(self) -> float:
        return self._graphs.capture_seconds if self._graphs is not None else 0.0

    def start_report(self) -> dict[str, Any]:
        return {}

    def warmup(self, cameras: int = 1, instruction: str = "warm up", batch: int = 1) -> None:
        """Nothing to compile; graphs are captured on the first frame of each shape."""

    def action_policy(self, embodiment: str, modes: dict[str, str] | None = None):
        raise ValueError(NO_HEAD)

    def predict_actions(self, *args, **kwargs):
        raise ValueError(NO_HEAD)

    def action_velocity(self, *args, **kwargs):
        raise ValueError(NO_HEAD)

    def prepare(self, frame_sets: Sequence[tuple[Sequence[np.ndarray], str]]) -> ModelInputs:
        return self.processor(frame_sets, device=self.device)

    @torch.inference_mode()
    def forward(self, inputs: ModelInputs) -> FeatureResult:
        pixels = self.family.pixel_values(inputs.images).to(self.dtype)  # (N, 3, S, S)
        if self.cuda_graphs and inputs.input_ids.shape[0] == 1:
            features = self._graphs(inputs.input_ids, pixels)
        else:
            features = self.model.features(inputs.input_ids, pixels)  # (B, L, D)
        return FeatureResult(features, inputs.attention_mask, inputs.layouts, inputs.images)

    @torch.inference_mode()
    def forward_reference(self, inputs: ModelInputs) -> FeatureResult:
        pixels = self.family.pixel_values(inputs.images).to(self.dtype)
        return FeatureResult(
            self.model.features(inputs.input_ids, pixels), inputs.attention_mask, inputs.layouts, inputs.images
        )

    def extract(self, images: Sequence[np.ndarray], instruction: str) -> FeatureResult:
        return self.forward(self.prepare([(images, instruction)]))

    def extract_batch(self, frame_sets: Sequence[tuple[Sequence[np.ndarray], str]]) -> FeatureResult:
        return self.forward(self.prepare(frame_sets))
