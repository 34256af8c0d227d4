"""``FeatureExtractor``: the public Python API that owns device, dtype, warm-up and the hot path.

    from groot_sage_ros import FeatureExtractor
    extractor = FeatureExtractor.from_pretrained("nvidia/GR00T-N1.5-3B", device="cuda", dtype="float16")
    result = extractor.extract([front_rgb, wrist_rgb], "pick up the cube")
    result.features        # (1, L, 2048) torch tensor on the device
    result.layout          # TokenLayout: image token ranges per camera, instruction range
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .checkpoint import CheckpointError, load_weights, meta_tensors, read_checkpoint_files
from .config import GrootConfig, parse_dtype
from .model.groot import GrootN15
from .normalization import EmbodimentNormalizer
from .processor import ModelInputs, Processor, ProcessorConfig, TokenLayout


@dataclass
class FeatureResult:
    features: torch.Tensor  # (B, L, D) on the engine's device, engine dtype
    attention_mask: torch.Tensor  # (B, L), 1 = token of the sample, 0 = right padding
    layouts: list[TokenLayout]
    images: torch.Tensor = field(repr=False)  # (B * cameras, 3, 224, 224) uint8 preprocessed frames

    @property
    def layout(self) -> TokenLayout:
        """The layout of the first (for ``extract``, the only) sample."""
        return self.layouts[0]


def resolve_device(device: str) -> torch.device:
    """A torch device from a string; an unavailable CUDA device is an error naming it."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device string ({err})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return resolved


class FeatureExtractor:
    """GR00T N1.5 backbone features for camera images and an instruction."""

    def __init__(self, model: GrootN15, processor: Processor, device: torch.device, dtype: torch.dtype, model_id: str,
                 root: Path | None = None):  # fmt: skip
        self.model = model
        self.root = root  # checkpoint folder (for experiment_cfg/metadata.json)
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.model_id = model_id
        self.config: GrootConfig = model.cfg
        self.load_seconds = 0.0

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        device: str = "cuda",
        dtype: str = "float16",
        tokenizer: str | None = None,
        instruction_format: str = "list_repr",
        warmup: bool = True,
        action_head: bool = False,
    ) -> "FeatureExtractor":
        """Load a checkpoint; with ``action_head`` the flow-matching head is built and loaded too."""
        start = time.perf_counter()
        torch_dtype = parse_dtype(dtype, "dtype")
        torch_device = resolve_device(device)
        files = read_checkpoint_files(checkpoint)
        with torch.device("meta"):
            model = GrootN15(files.config, with_action_head=action_head)
        load_weights(model, files, torch_device, torch_dtype)
        processor = Processor(ProcessorConfig(tokenizer=tokenizer, instruction_format=instruction_format))
        extractor = cls._ready(model, processor, torch_device, torch_dtype, str(checkpoint), files.root, warmup)
        extractor.load_seconds = time.perf_counter() - start
        return extractor

    @classmethod
    def _ready(cls, model, processor, device, dtype, model_id: str, root: Path | None, warmup: bool):
        """The steps after the weights are in: buffers, a check that nothing is left on meta, eval, warm-up."""
        model.backbone.materialize_buffers(device)
        missing = meta_tensors(model)
        if missing:
            raise CheckpointError(f"{root or model_id}: tensors left without values after loading: {missing}")
        model.eval().requires_grad_(False)
        extractor = cls(model, processor, device, dtype, model_id=model_id, root=root)
        if warmup:
            extractor.warmup()
        return extractor

    @classmethod
    def from_random(
        cls, raw_config: dict, device: str = "cuda", dtype: str = "float16", seed: int = 0, warmup: bool = True,
        action_head: bool = False,
    ) -> "FeatureExtractor":
        """Random weights in the shapes of ``raw_config`` (a config.json dict): for benchmarks."""
        torch_dtype, torch_device = parse_dtype(dtype, "dtype"), resolve_device(device)
        config = GrootConfig.from_dict(raw_config)
        with torch.device("meta"):
            model = GrootN15(config, with_action_head=action_head)
        model.to_empty(device=torch_device)
        random_init_(model, seed)
        model.to(torch_dtype)
        return cls._ready(model, Processor(), torch_device, torch_dtype, f"random:{seed}", None, warmup)

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def warmup(self, cameras: int = 1) -> None:
        """One throw-away call so kernels, allocator pools and caches exist before the first frame."""
        blank = np.zeros((self.processor.config.image_size,) * 2 + (3,), dtype=np.uint8)
        self.extract([blank] * cameras, "warm up")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def prepare(self, frame_sets: Sequence[tuple[Sequence[np.ndarray], str]]) -> ModelInputs:
        """Preprocess on the engine's device (crop, resize, normalise as tensors)."""
        return self.processor(frame_sets, device=self.device)

    @torch.inference_mode()
    def forward(self, inputs: ModelInputs) -> FeatureResult:
        """The model call: no host synchronisation; results stay on the device."""
        out = self.model.backbone(
            input_ids=inputs.input_ids,
            pixel_values=inputs.pixel_values.to(self.dtype),
            attention_mask=inputs.attention_mask,
        )
        return FeatureResult(out.features, out.attention_mask, inputs.layouts, inputs.images)

    def extract(self, images: Sequence[np.ndarray], instruction: str) -> FeatureResult:
        """One frame set: a list of HxWx3 uint8 RGB arrays (one per camera) and an instruction."""
        return self.forward(self.prepare([(images, instruction)]))

    @property
    def has_action_head(self) -> bool:
        return hasattr(self.model, "action_head")

    def normalizer(self, embodiment: str, modes: dict[str, str] | None = None) -> EmbodimentNormalizer:
        """Statistics of ``embodiment`` from the checkpoint's experiment_cfg/metadata.json."""
        if self.root is None:
            raise ValueError("this model was not loaded from a checkpoint folder: no metadata.json")
        return EmbodimentNormalizer.from_metadata(self.root / "experiment_cfg" / "metadata.json", embodiment, modes)

    @torch.inference_mode()
    def predict_actions(
        self, result: FeatureResult, states: torch.Tensor, embodiment_id: int, seed: int | None = None
    ) -> torch.Tensor:
        """Normalised action chunks (B, action_horizon, action_dim) from features and normalised,
        padded states (B, max_state_dim). Each sample sees only its own tokens (no padding), as at batch 1.
        A fixed ``seed`` gives the same noise, hence the same chunk, every time."""
        if not self.has_action_head:
            raise ValueError("the action head was not loaded (from_pretrained(..., action_head=True))")
        head = self.model.action_head
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        chunks = []
        for row, layout in enumerate(result.layouts):
            features = result.features[row : row + 1, : layout.seq_len]  # (1, L, C)
            state = states[row].to(self.device, self.dtype).view(1, 1, -1)  # (1, 1, S)
            category = torch.full((1,), embodiment_id, dtype=torch.int64, device=self.device)
            chunks.append(head.get_action(features, state, category, generator))
        return torch.cat(chunks)  # (B, H, A)

    def extract_batch(self, frame_sets: Sequence[tuple[Sequence[np.ndarray], str]]) -> FeatureResult:
        """Several frame sets in one call; each sample's features equal its batch-of-one features."""
        return self.forward(self.prepare(frame_sets))



@torch.no_grad()
def random_init_(model: torch.nn.Module, seed: int) -> None:
    """N(0, 0.02) matrices and embeddings, unit norm weights, zero biases (deterministic per seed)."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, param in model.named_parameters():
        if param.ndim >= 2:
            param.normal_(0.0, 0.02, generator=generator)
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.fill_(1.0)
