"""``StudentEngine``: the SAGE student behind the ``FeatureEngine`` contract (the teacher family's processor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..api import FeatureResult, ModelInputs, TokenFacts
from ..engine.runtime import RuntimeConfig, parse_dtype, resolve_device
from ..families import by_name
from ..fastpath.compile import (
    MarkVaryingDims,
    compile_arguments,
    compile_cache_counts,
    start_kind,
    use_compile_cache,
)
from ..fastpath.cuda_graphs import GraphCache
from .checkpoint import load_student
from .model import SageStudent

NO_HEAD = "the student engine has no action head; engine.load_action_head gives the teacher's, for its features"


def student_features(model: SageStudent, input_ids: torch.Tensor, images: torch.Tensor, pixel_values) -> torch.Tensor:
    """(B, L) ids, (N, 3, S, S) uint8 frames -> (B, L, D) teacher-unit features; ``pixel_values``: the teacher
    family's normalisation. The function the serving engine compiles and its CUDA graphs replay."""
    return model.features(input_ids, pixel_values(images).to(model.head.weight.dtype))


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
        runtime: RuntimeConfig | None = None,
    ):
        self.model, self.family, self.processor = model, family, processor
        self.device, self.dtype, self.model_id = device, dtype, model_id
        self.runtime = runtime = runtime or RuntimeConfig()
        # The student is small enough that its time is the number of kernels, a few microseconds each. So,
        # with the fast path's pieces: the whole call, the pixels' normalisation included, compiled into fewer
        # kernels (batch and length dynamic), and on CUDA batch-1 calls replay a CUDA graph per (length,
        # cameras) shape: 0.40 ms against 0.49 eager in the graph on an H100 (docs/offline.md).
        self.compiled, self.cuda_graphs = runtime.compiles_on(device), runtime.graphs_on(device)
        self._compiled_features = None
        if self.compiled:
            use_compile_cache(runtime.compile_cache_dir)
            compiled = torch.compile(student_features, dynamic=None, **compile_arguments(runtime.compile_mode))
            self._compiled_features = MarkVaryingDims(compiled, ((0, 1), (0,)))  # ids (B, L), frames (N, ...)
        self._graphs = GraphCache(self._features, device, warmup_calls=3) if self.cuda_graphs else None
        self.compile_cache: dict[str, int] = {}
        self.start_seconds = 0.0

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "cpu", dtype: str = "float32", runtime: RuntimeConfig | None = None
    ) -> "StudentEngine":
        torch_device, torch_dtype = resolve_device(device), parse_dtype(dtype, "dtype")
        model, _ = load_student(path, "cpu")
        model = model.to(device=torch_device, dtype=torch_dtype).eval().requires_grad_(False)
        family = by_name(model.cfg.facts.family, f"{path}: tokens.family")
        tokenizer = model.cfg.tokenizer if model.cfg.tokenizer != "qwen-tiktoken" else None
        processor = family.processor(tokenizer=tokenizer)
        return cls(model, family, processor, torch_device, torch_dtype, str(path), runtime)

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
        if not self.compiled:
            return {}
        return {"start_kind": start_kind(True, self.compile_cache), "compile_cache": self.compile_cache}

    def warmup(self, cameras: int = 1, instruction: str = "warm up", batch: int = 1) -> None:
        """One throw-away call: the call compiled (or loaded from the kernel cache) and, on CUDA, the graph of
        ``instruction``'s length captured before the first frame. Nothing to do where neither is on."""
        if not (self.compiled or self.cuda_graphs):
            return
        blank = np.full((self.facts.image_size, self.facts.image_size, 3), 127, dtype=np.uint8)
        self.extract_batch([([blank] * cameras, instruction)] * batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self.compiled:
            self.compile_cache = compile_cache_counts()

    def action_policy(self, embodiment: str, modes: dict[str, str] | None = None):
        raise ValueError(NO_HEAD)

    def predict_actions(self, *args, **kwargs):
        raise ValueError(NO_HEAD)

    def action_velocity(self, *args, **kwargs):
        raise ValueError(NO_HEAD)

    def prepare(self, frame_sets: Sequence[tuple[Sequence[np.ndarray], str]]) -> ModelInputs:
        return self.processor(frame_sets, device=self.device)

    def _features(self, input_ids: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """(B, L) ids, (N, 3, S, S) uint8 frames -> (B, L, D): compiled where the engine compiles."""
        forward = self._compiled_features or student_features
        return forward(self.model, input_ids, images, self.family.pixel_values)

    @torch.inference_mode()
    def forward(self, inputs: ModelInputs) -> FeatureResult:
        if self.cuda_graphs and inputs.input_ids.shape[0] == 1:
            features = self._graphs(inputs.input_ids, inputs.images)
        else:
            features = self._features(inputs.input_ids, inputs.images)  # (B, L, D)
        return FeatureResult(features, inputs.attention_mask, inputs.layouts, inputs.images)

    @torch.inference_mode()
    def forward_reference(self, inputs: ModelInputs) -> FeatureResult:
        features = student_features(self.model, inputs.input_ids, inputs.images, self.family.pixel_values)
        return FeatureResult(features, inputs.attention_mask, inputs.layouts, inputs.images)

    def extract(self, images: Sequence[np.ndarray], instruction: str) -> FeatureResult:
        return self.forward(self.prepare([(images, instruction)]))

    def extract_batch(self, frame_sets: Sequence[tuple[Sequence[np.ndarray], str]]) -> FeatureResult:
        return self.forward(self.prepare(frame_sets))
