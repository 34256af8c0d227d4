"""``FeatureExtractor``: the public Python API that owns device, dtype, warm-up and the hot path.

    from groot_sage_ros import FeatureExtractor
    extractor = FeatureExtractor.from_pretrained("nvidia/GR00T-N1.5-3B", device="cuda", dtype="float16")
    result = extractor.extract([front_rgb, wrist_rgb], "pick up the cube")
    result.features        # (1, L, 2048) torch tensor on the device
    result.layout          # TokenLayout: image token ranges per camera, instruction range
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import CheckpointError, load_weights, meta_tensors, read_checkpoint_files
from .compilation import compile_cache_counts, use_compile_cache
from .config import GrootConfig, RuntimeConfig, parse_dtype
from .cuda_graphs import GraphCache
from .fast_layers import FastLayers
from .model.groot import GrootN15
from .normalization import EmbodimentNormalizer
from .processor import PAD_TOKEN_ID, ModelInputs, Processor, ProcessorConfig, TokenLayout, normalize


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
    """GR00T N1.5 backbone features for camera images and an instruction.

    Two paths compute the same function. ``forward`` is the fast one: on CUDA, for batches of up to
    ``graph_max_batch``, it pads the prompt to a length bucket and replays a CUDA graph of the model with
    fused projections and (optionally) ``torch.compile``d layers (``fast_layers``), one graph per (batch,
    bucket, cameras); larger batches and other devices call the model directly. ``forward_eager`` runs the
    modules as built, in plain PyTorch: the reference that ``bench --compare eager`` and the numerics tests
    measure the fast path against.
    """

    def __init__(self, model: GrootN15, processor: Processor, device: torch.device, dtype: torch.dtype, model_id: str,
                 root: Path | None = None, runtime: RuntimeConfig | None = None):  # fmt: skip
        self.model = model
        self.root = root  # checkpoint folder (for experiment_cfg/metadata.json)
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.model_id = model_id
        self.config: GrootConfig = model.cfg
        self.runtime = runtime or RuntimeConfig()
        self.compiled = self.runtime.compiles_on(device)
        self.graphed = self.runtime.graphs_on(device)
        self.fast_layers: FastLayers | None = None  # set by _ready when compiled or graphed
        self._backbone_graphs = GraphCache(self._backbone_features, device) if self.graphed else None
        self._head_graphs = GraphCache(self._action_chunk, device) if self.graphed else None
        # Start-up, in seconds: weights in place, then the warm-up call (compilation and graph capture).
        self.load_seconds = 0.0
        self.warmup_seconds = 0.0
        self.compile_cache: dict[str, int] = {}

    @property
    def _graph_caches(self) -> list[GraphCache]:
        return [cache for cache in (self._backbone_graphs, self._head_graphs) if cache is not None]

    @property
    def capture_seconds(self) -> float:
        """Time spent warming up and capturing CUDA graphs so far (each new shape costs one capture)."""
        return sum(cache.capture_seconds for cache in self._graph_caches)

    @property
    def graphs_captured(self) -> int:
        """CUDA graphs captured so far, backbone and action head together."""
        return sum(len(cache) for cache in self._graph_caches)

    @property
    def start_seconds(self) -> float:
        """From the call that built the extractor to the first features: the start a node pays."""
        return self.load_seconds + self.warmup_seconds

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
        runtime: RuntimeConfig | None = None,
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
        return cls._ready(model, processor, torch_device, torch_dtype, str(checkpoint), files.root, warmup, runtime,
                          start)  # fmt: skip

    @classmethod
    def _ready(cls, model, processor, device, dtype, model_id: str, root: Path | None, warmup: bool,
               runtime: RuntimeConfig | None, start: float):  # fmt: skip
        """The steps after the weights are in: buffers, a check that nothing is left on meta, eval,
        compilation, warm-up; ``start`` is when loading began (for ``load_seconds``)."""
        model.backbone.materialize_buffers(device)
        missing = meta_tensors(model)
        if missing:
            raise CheckpointError(f"{root or model_id}: tensors left without values after loading: {missing}")
        model.eval().requires_grad_(False)
        extractor = cls(model, processor, device, dtype, model_id=model_id, root=root, runtime=runtime)
        runtime = extractor.runtime
        if extractor.compiled:
            use_compile_cache(runtime.compile_cache_dir)
        if extractor.compiled or extractor.graphed:
            extractor.fast_layers = FastLayers(model, extractor.compiled, runtime.compile_mode, runtime.dynamic_lengths)
        extractor.load_seconds = time.perf_counter() - start
        if warmup:
            extractor.warmup()
        return extractor

    @classmethod
    def from_random(
        cls, raw_config: dict, device: str = "cuda", dtype: str = "float16", seed: int = 0, warmup: bool = True,
        action_head: bool = False, runtime: RuntimeConfig | None = None,
    ) -> "FeatureExtractor":
        """Random weights in the shapes of ``raw_config`` (a config.json dict): for benchmarks."""
        start = time.perf_counter()
        torch_dtype, torch_device = parse_dtype(dtype, "dtype"), resolve_device(device)
        config = GrootConfig.from_dict(raw_config)
        with torch.device("meta"):
            model = GrootN15(config, with_action_head=action_head)
        model.to_empty(device=torch_device)
        random_init_(model, seed)
        model.to(torch_dtype)
        return cls._ready(model, Processor(), torch_device, torch_dtype, f"random:{seed}", None, warmup, runtime, start)

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def warmup(self, cameras: int = 1, instruction: str = "warm up", batch: int = 1) -> None:
        """Throw-away calls so that kernels are compiled and the graphs for ``batch`` frame sets of
        ``instruction``'s length bucket (and its action chunk, with the head) exist before the first frame."""
        tick = time.perf_counter()
        blank = np.full((self.processor.config.image_size,) * 2 + (3,), 127, dtype=np.uint8)
        result = self.extract_batch([([blank] * cameras, instruction)] * batch)
        if self.has_action_head:
            self.predict_actions(result, torch.zeros(batch, self.config.action_head.max_state_dim), 0, seed=0)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.warmup_seconds += time.perf_counter() - tick
        if self.compiled:
            self.compile_cache = compile_cache_counts()

    def prepare(self, frame_sets: Sequence[tuple[Sequence[np.ndarray], str]]) -> ModelInputs:
        """Preprocess on the engine's device (crop, resize, normalise as tensors)."""
        return self.processor(frame_sets, device=self.device)

    @torch.inference_mode()
    def forward(self, inputs: ModelInputs) -> FeatureResult:
        """The model call, fast path: no host synchronisation; results stay on the device."""
        input_ids = inputs.input_ids  # (B, L)
        if self.graphed and input_ids.shape[0] <= self.runtime.graph_max_batch:
            rows, length = input_ids.shape
            ids, images = pad_batch(pad_to_bucket(input_ids, self.runtime.length_bucket), inputs.images)
            features = self._backbone_graphs(ids, images)[:rows, :length]  # (B, L, D): the padding sliced off
        else:
            features = self._backbone_features(input_ids, inputs.images)
        return FeatureResult(features, inputs.attention_mask, inputs.layouts, inputs.images)

    @torch.inference_mode()
    def forward_eager(self, inputs: ModelInputs) -> FeatureResult:
        """The plain PyTorch path (modules as built, no compiled code, no graphs, no padding): the reference."""
        with self.plain_modules():
            features = self._backbone_features(inputs.input_ids, inputs.images)
        return FeatureResult(features, inputs.attention_mask, inputs.layouts, inputs.images)

    def plain_modules(self):
        """A context in which the model runs as built (see ``FastLayers.plain``); not for concurrent calls."""
        return self.fast_layers.plain() if self.fast_layers is not None else nullcontext()

    def _backbone_features(self, input_ids: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and (N, 3, 224, 224) uint8 frames -> (B, L, D) features; the function graphs replay."""
        pixels = normalize(images).to(self.dtype)  # (N, 3, 224, 224) in [-1, 1]
        return self.model.backbone(input_ids=input_ids, pixel_values=pixels, attention_mask=None).features

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
        self, result: FeatureResult, states: torch.Tensor, embodiment_id: int, seed: int | None = None,
        eager: bool = False,
    ) -> torch.Tensor:
        """Normalised action chunks (B, action_horizon, action_dim) from features and normalised,
        padded states (B, max_state_dim). Each sample sees only its own tokens (no padding), as at batch 1.
        A fixed ``seed`` gives the same noise, hence the same chunk, every time (on either path);
        ``eager`` takes the plain PyTorch path, as ``forward_eager`` does."""
        if not self.has_action_head:
            raise ValueError("the action head was not loaded (from_pretrained(..., action_head=True))")
        cfg = self.config.action_head
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        chunk = self._head_graphs if self.graphed and not eager else self._action_chunk
        chunks = []
        for row, layout in enumerate(result.layouts):
            features = result.features[row : row + 1, : layout.seq_len]  # (1, L, C)
            state = states[row].to(self.device, self.dtype).view(1, 1, -1)  # (1, 1, S)
            category = torch.full((1,), embodiment_id, dtype=torch.int64, device=self.device)
            noise = torch.randn((1, cfg.action_horizon, cfg.action_dim), generator=generator, device=self.device)
            with self.plain_modules() if eager else nullcontext():
                chunks.append(chunk(features, state, category, noise))
        return torch.cat(chunks)  # (B, H, A)

    def _action_chunk(self, features, state, category, noise) -> torch.Tensor:
        """One sample's Euler integration (see FlowMatchingActionHead.get_action); the function graphs replay."""
        return self.model.action_head.get_action(features, state, category, noise=noise)

    def extract_batch(self, frame_sets: Sequence[tuple[Sequence[np.ndarray], str]]) -> FeatureResult:
        """Several frame sets in one call; each sample's features equal its batch-of-one features."""
        return self.forward(self.prepare(frame_sets))


def pad_to_bucket(input_ids: torch.Tensor, bucket: int) -> torch.Tensor:
    """(B, L) ids right-padded with <|endoftext|> to (B, ceil(L / bucket) * bucket); exact for a causal LM."""
    length = input_ids.shape[1]
    return F.pad(input_ids, (0, -length % bucket), value=PAD_TOKEN_ID)


def pad_batch(input_ids: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat the last sample up to the next power-of-two batch, so a handful of graphs serve every batch
    size (rows never interact, so the real rows' features are unchanged)."""
    rows = input_ids.shape[0]
    target = 1 << (rows - 1).bit_length()
    if target == rows:
        return input_ids, images
    cameras = images.shape[0] // rows
    extra = target - rows
    input_ids = torch.cat([input_ids, input_ids[-1:].expand(extra, -1)])  # (target, L)
    images = torch.cat([images, images[-cameras:].repeat(extra, 1, 1, 1)])  # (target * cameras, 3, H, W)
    return input_ids, images


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
