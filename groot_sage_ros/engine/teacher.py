"""``TeacherEngine``: a GR00T family's model behind the ``FeatureEngine`` contract; owns device, dtype,
warm-up and the hot path. Family-generic: what differs between families it asks the family.

    from groot_sage_ros.engine import load_engine
    engine = load_engine("nvidia/GR00T-N1.5-3B", device="cuda", dtype="float16")
    result = engine.extract([front_rgb, wrist_rgb], "pick up the cube")
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..api import ChunkPrefix, FeatureResult, ModelInputs, TokenFacts, TokenLayout
from ..checkpoint.files import CheckpointError, read_checkpoint_files
from ..checkpoint.load import load_weights, meta_tensors
from ..checkpoint.write import random_init_
from ..families import detect
from ..families.base import FamilyModel, ModelFamily
from ..families.common.flow import Guidance, start_and_strength
from ..fastpath.compile import (
    compile_cache_counts,
    install_fast_path,
    start_kind,
    use_compile_cache,
)
from ..fastpath.cuda_graphs import GraphCache
from ..fastpath.padding import pad_batch, pad_to_bucket
from ..fastpath.precision import (
    PrecisionOptions,
    check_supported,
    quantize_layers,
    quantize_token_tables,
)
from .actions import HeadPolicy
from .runtime import RuntimeConfig, parse_dtype, resolve_device


class TeacherEngine:
    """Backbone features (and, with the head, action chunks) of a GR00T checkpoint.

    Two paths compute the same function. ``forward`` is the fast one: the family's repeated layers run as
    fused, optionally compiled functions (``fastpath/compile.py``), and on CUDA, for batches of up to
    ``graph_max_batch``, the whole call replays a CUDA graph, the prompt padded to a length bucket, one
    graph per (batch, bucket, cameras). ``forward_reference`` runs the modules as built, in plain PyTorch:
    the reference that ``bench --compare eager`` and the numerics tests measure the fast path against.
    Neither changes any module, so they may run at the same time from different threads.
    """

    def __init__(
        self,
        model: FamilyModel,
        family: ModelFamily,
        processor,
        device: torch.device,
        dtype: torch.dtype,
        model_id: str,
        root: Path | None = None,
        runtime: RuntimeConfig | None = None,
    ):
        self.model, self.family, self.processor = model, family, processor
        self.root = root  # checkpoint folder (for the family's statistics file)
        self.device, self.dtype, self.model_id = device, dtype, model_id
        self.runtime = runtime or RuntimeConfig()
        self.compiled = self.runtime.compiles_on(device)
        self.graphed = self.runtime.graphs_on(device)
        self._calls: dict | None = None  # per-layer fast callables, set by _ready when compiled or graphed
        self._backbone_graphs = GraphCache(self._fast_features, device) if self.graphed else None
        self._head_graphs = GraphCache(self._fast_chunk, device) if self.graphed else None
        self._guided_graphs: dict[tuple, GraphCache] = {}  # RTC "guided": (max weight, steps) -> graphs
        # Start-up, in seconds: weights in place, then the warm-up call (compilation and graph capture).
        self.load_seconds = 0.0
        self.warmup_seconds = 0.0
        self.compile_cache: dict[str, int] = {}
        self.quantize_seconds, self.modules_swapped = 0.0, 0  # the precision swap at load
        self.modules_kept_fp16 = 0  # Linear layers runtime.precision_keep_fp16 kept out of the swap

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        device: str = "cuda",
        dtype: str = "float16",
        tokenizer: str | None = None,
        instruction_format: str | None = None,
        warmup: bool = True,
        action_head: bool = False,
        runtime: RuntimeConfig | None = None,
        backbone: bool = True,
    ) -> "TeacherEngine":
        """Load a checkpoint of any registered family; with ``action_head`` the head is built and loaded too;
        without ``backbone``, the head alone (for features from elsewhere: a student)."""
        start = time.perf_counter()
        torch_dtype, torch_device = parse_dtype(dtype, "dtype"), resolve_device(device)
        check_supported((runtime or RuntimeConfig()).precision, torch_device)  # before anything is read
        family_of = {}

        def check_config(raw: dict, source: str) -> None:  # before the weight files are looked at
            family_of["family"] = family = detect(raw, source)
            family_of["config"] = family.parse_config(raw, source)

        files = read_checkpoint_files(checkpoint, check_config)
        family, config = family_of["family"], family_of["config"]
        if backbone:
            files = family.complete_files(files, config)
        with torch.device("meta"):
            model = family.build(config, with_action_head=action_head, with_backbone=backbone)
        load_weights(model, files, family.keys, torch_device, torch_dtype)
        processor = family.processor(tokenizer=tokenizer, instruction_format=instruction_format, root=files.root)
        return cls._ready(
            model, family, processor, torch_device, torch_dtype, str(checkpoint), files.root, warmup, runtime, start
        )

    @classmethod
    def from_random(
        cls,
        raw_config: dict,
        device: str = "cuda",
        dtype: str = "float16",
        seed: int = 0,
        warmup: bool = True,
        action_head: bool = False,
        runtime: RuntimeConfig | None = None,
    ) -> "TeacherEngine":
        """Random weights in the shapes of ``raw_config`` (a config.json dict of any family): for benchmarks."""
        start = time.perf_counter()
        torch_dtype, torch_device = parse_dtype(dtype, "dtype"), resolve_device(device)
        check_supported((runtime or RuntimeConfig()).precision, torch_device)  # before anything is read
        family = detect(raw_config)
        config = family.parse_config(raw_config, "config")
        with torch.device("meta"):
            model = family.build(config, with_action_head=action_head)
        model.to_empty(device=torch_device)
        random_init_(model, seed)
        model.to(torch_dtype)
        return cls._ready(
            model, family, family.processor(), torch_device, torch_dtype, f"random:{seed}", None, warmup, runtime, start
        )

    @classmethod
    def _ready(
        cls,
        model,
        family,
        processor,
        device,
        dtype,
        model_id: str,
        root: Path | None,
        warmup: bool,
        runtime: RuntimeConfig | None,
        start: float,
    ):
        """The steps after the weights are in: buffers, a check that nothing is left on meta, eval, the
        precision swap, the fast path (fusion, compilation), warm-up; ``start`` is when loading began."""
        model.materialize_buffers(device)
        missing = meta_tensors(model)
        if missing:
            raise CheckpointError(f"{root or model_id}: tensors left without values after loading: {missing}")
        model.eval().requires_grad_(False)
        engine = cls(model, family, processor, device, dtype, model_id=model_id, root=root, runtime=runtime)
        runtime = engine.runtime
        regions = family.fast_regions(model)
        tick = time.perf_counter()
        engine.modules_swapped, engine.modules_kept_fp16 = quantize_layers(
            regions, runtime.precision, PrecisionOptions(runtime.fp8_min_rows), runtime.precision_keep_fp16
        )
        engine.modules_swapped += quantize_token_tables(model, runtime.precision)
        engine.quantize_seconds = time.perf_counter() - tick
        if engine.compiled:
            use_compile_cache(runtime.compile_cache_dir)
        if engine.compiled or engine.graphed:
            engine._calls = install_fast_path(
                model, regions, engine.compiled, runtime.compile_mode, runtime.dynamic_lengths
            )
        engine.load_seconds = time.perf_counter() - start
        if warmup:
            engine.warmup()
        return engine

    # -- the contract ----------------------------------------------------------------------------

    @property
    def facts(self) -> TokenFacts:
        return self.processor.facts

    @property
    def feature_dim(self) -> int:
        return self.family.feature_dim(self.model.cfg)

    @property
    def has_action_head(self) -> bool:
        return self.model.has_action_head

    @property
    def parameter_count(self) -> int:
        """Weights of the model as loaded (the fast path's fused modules share them and are not counted)."""
        return sum(p.numel() for name, p in self.model.named_parameters() if not name.startswith("fast."))

    @property
    def action_horizon(self) -> int:
        return self.model.action_horizon

    @property
    def action_dim(self) -> int:
        return self.model.action_dim

    @property
    def state_width(self) -> int:
        """Width of the normalised, zero-padded state vector the head takes."""
        return self.model.state_width

    @property
    def start_seconds(self) -> float:
        """From the call that built the engine to the first features: the start a node pays."""
        return self.load_seconds + self.warmup_seconds

    @property
    def capture_seconds(self) -> float:
        """Time spent warming up and capturing CUDA graphs so far (each new shape costs one capture)."""
        return sum(cache.capture_seconds for cache in self._graph_caches)

    @property
    def graphs_captured(self) -> int:
        """CUDA graphs captured so far, backbone and action head together."""
        return sum(len(cache) for cache in self._graph_caches)

    @property
    def _graph_caches(self) -> list[GraphCache]:
        caches = [self._backbone_graphs, self._head_graphs, *self._guided_graphs.values()]
        return [cache for cache in caches if cache is not None]

    def start_report(self) -> dict[str, Any]:
        """How the start went: weights, warm-up (compilation, graph capture), and whether compiled kernels
        came from the on-disk cache ("warm") or were compiled afresh ("cold")."""
        cache = self.compile_cache
        return {
            "start_kind": start_kind(self.compiled, cache),
            "load_s": round(self.load_seconds, 3),
            "warmup_s": round(self.warmup_seconds, 3),
            "compile_cache_hits": cache.get("hits", 0),
            "compile_cache_misses": cache.get("misses", 0),
            "cuda_graphs": self.graphs_captured,
            "precision": self.runtime.precision,
            "quantize_s": round(self.quantize_seconds, 3),
            "modules_swapped": self.modules_swapped,
            "modules_kept_fp16": self.modules_kept_fp16,
            "precision_keep_fp16": ",".join(self.runtime.precision_keep_fp16) or "none",
        }

    def warmup(self, cameras: int = 1, instruction: str = "warm up", batch: int = 1) -> None:
        """Throw-away calls so that kernels are compiled and the graphs for ``batch`` frame sets of
        ``instruction``'s length bucket (and its action chunk, with the head) exist before the first frame."""
        tick = time.perf_counter()
        if self.model.has_backbone:
            blank = np.full((self.facts.image_size, self.facts.image_size, 3), 127, dtype=np.uint8)
            result = self.extract_batch([([blank] * cameras, instruction)] * batch)
        else:  # the head alone: features of this prompt's length, as a student would give them
            _, layout = self.processor.encode(cameras, instruction)
            features = torch.zeros(batch, layout.seq_len, self.feature_dim, device=self.device, dtype=self.dtype)
            result = FeatureResult(features, torch.ones(batch, layout.seq_len), [layout] * batch, torch.empty(0))
        if self.has_action_head:
            self.predict_actions(result, torch.zeros(batch, self.state_width), 0, seed=0)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.warmup_seconds += time.perf_counter() - tick
        if self.compiled:
            self.compile_cache = compile_cache_counts()

    def prepare(self, frame_sets: Sequence[tuple[Sequence[np.ndarray], str]]) -> ModelInputs:
        """Preprocess on the engine's device (crop, resize, normalise as tensors)."""
        return self.processor(frame_sets, device=self.device)

    @torch.inference_mode()
    def forward(self, inputs: ModelInputs, image_attention: bool = False) -> FeatureResult:
        """The model call, fast path: no host synchronisation; results stay on the device. ``image_attention``:
        also the last kept layer's attention to the image tokens (``FeatureResult.image_attention``), from the
        fast layers without CUDA graphs (the layer's input is captured on the way)."""
        input_ids = inputs.input_ids  # (B, L)
        if image_attention:
            pixels = self.family.pixel_values(inputs.images).to(self.dtype)  # (N, 3, S, S)
            features, attention = self.model.features_and_image_attention(input_ids, pixels, self._calls)
            return FeatureResult(features, inputs.attention_mask, inputs.layouts, inputs.images, attention)
        if self.graphed and input_ids.shape[0] <= self.runtime.graph_max_batch:
            rows, length = input_ids.shape
            bucket = self.runtime.length_bucket if self.family.bucket_padding_exact else 1
            ids, images = pad_batch(pad_to_bucket(input_ids, bucket, self.facts.pad_token_id), inputs.images)
            features = self._backbone_graphs(ids, images)[:rows, :length]  # (B, L, D): the padding sliced off
        else:
            features = self._fast_features(input_ids, inputs.images)
        return FeatureResult(features, inputs.attention_mask, inputs.layouts, inputs.images)

    @torch.inference_mode()
    def forward_reference(self, inputs: ModelInputs) -> FeatureResult:
        """The plain PyTorch path (modules as built, no compiled code, no graphs, no padding): the reference."""
        features = self._features(inputs.input_ids, inputs.images, None)
        return FeatureResult(features, inputs.attention_mask, inputs.layouts, inputs.images)

    def extract(self, images: Sequence[np.ndarray], instruction: str) -> FeatureResult:
        """One frame set: a list of HxWx3 uint8 RGB arrays (one per camera) and an instruction."""
        return self.forward(self.prepare([(images, instruction)]))

    def extract_batch(self, frame_sets: Sequence[tuple[Sequence[np.ndarray], str]]) -> FeatureResult:
        """Several frame sets in one call; each sample's features equal its batch-of-one features."""
        return self.forward(self.prepare(frame_sets))

    def _features(self, input_ids: torch.Tensor, images: torch.Tensor, calls) -> torch.Tensor:
        """(B, L) ids and (N, 3, S, S) uint8 frames -> (B, L, D) features."""
        pixels = self.family.pixel_values(images).to(self.dtype)  # (N, 3, S, S)
        return self.model.features(input_ids, pixels, calls)

    def _fast_features(self, input_ids: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The fast callables' features; the function the backbone's graphs replay."""
        return self._features(input_ids, images, self._calls)

    # -- actions ---------------------------------------------------------------------------------

    def action_policy(self, embodiment: str, modes: dict[str, str] | None = None) -> HeadPolicy:
        """The head with ``embodiment``'s statistics from the checkpoint folder: robot units in and out."""
        if not self.has_action_head:
            raise ValueError("the action head was not loaded (load_engine(..., action_head=True))")
        if self.root is None:
            raise ValueError("this model was not loaded from a checkpoint folder: no normalisation statistics")
        return HeadPolicy(self, self.family.normalizer(self.root, embodiment, modes))

    @torch.inference_mode()
    def predict_actions(
        self,
        result: FeatureResult,
        states: torch.Tensor,
        embodiment_id: int,
        seed: int | None = None,
        reference: bool = False,
        prefix: ChunkPrefix | None = None,
    ) -> torch.Tensor:
        """Normalised action chunks (B, horizon, action_dim) from features and normalised, padded states
        (B, state_width). Each sample sees only its own tokens (no padding), as at batch 1. A fixed ``seed``
        gives the same noise, hence the same chunk, every time (on either path); ``reference`` takes the
        plain PyTorch path, as ``forward_reference`` does. With ``prefix`` each chunk continues that one
        (real-time chunking): "prefix" mode replays the same CUDA graph with other inputs; "guided" one of its
        own, which holds a backward pass through the head at each guided step."""
        if not self.has_action_head:
            raise ValueError("the action head was not loaded (load_engine(..., action_head=True))")
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        guided = prefix is not None and prefix.mode == "guided"
        fast = self._head_graphs if self.graphed else self._fast_chunk
        chunks = []
        for row, layout in enumerate(result.layouts):
            features = result.features[row : row + 1, : layout.seq_len].to(self.dtype)  # (1, L, C), from any engine
            token_mask = torch.ones(1, layout.seq_len, dtype=torch.bool, device=self.device)  # no padding
            image_mask = layout_image_mask(layout, self.device)  # (1, L)
            state = states[row].to(self.device, self.dtype).view(1, 1, -1)  # (1, 1, S)
            category = torch.full((1,), embodiment_id, dtype=torch.int64, device=self.device)
            noise = torch.randn(
                (1, self.model.action_horizon, self.model.action_dim), generator=generator, device=self.device
            )
            start, strength = start_and_strength(prefix, noise)  # the noise, or RTC's prefix in it
            inputs = (features, token_mask, image_mask, state, category, start)
            calls = None if reference else self._calls
            if guided:
                with torch.inference_mode(False):  # guidance differentiates the head in the actions
                    cloned = [t.clone() for t in inputs]  # ordinary tensors: autograd may save them
                    guidance = Guidance.of(prefix, start.clone())
                    if reference or not self.graphed:
                        chunk = self.model.action_chunk(*cloned, calls, guidance=guidance)
                    else:  # the backward passes replay in the graph too
                        graphs = self._guided_graph_cache(guidance.max_weight, guidance.steps)
                        chunk = graphs(*cloned, guidance.target, guidance.weights)
                chunks.append(chunk.detach())
            elif reference:
                chunks.append(self.model.action_chunk(*inputs, calls, strength))
            else:
                strength = strength if strength is not None else torch.ones_like(start[:1, :, :1])  # (1, H, 1)
                chunks.append(fast(*inputs, strength))
        return torch.cat(chunks)  # (B, H, A)

    def action_velocity(
        self,
        features: torch.Tensor,
        token_mask: torch.Tensor,
        image_mask: torch.Tensor,
        actions: torch.Tensor,
        t: torch.Tensor,
        states: torch.Tensor,
        embodiment_id: int,
        fast: bool = False,
    ) -> torch.Tensor:
        """The head's predicted flow velocity (B, H, A) for noisy ``actions`` (B, H, A) at times ``t`` (B,) in
        [0, 1), from features (B, L, D) with their real-token and image-token masks (B, L) bool, and
        normalised, padded states (B, state_width). Differentiable in the features (a student trained through
        the frozen head); no graphs. ``fast``: the fast path's fused (and, where compiled, compiled) layers
        (``use_fast_layers``), the same arithmetic as the reference path's modules."""
        if not self.has_action_head:
            raise ValueError("the action head was not loaded (load_engine(..., action_head=True))")
        batch = features.shape[0]
        buckets = (t * self.model.timestep_buckets).long().clamp(0, self.model.timestep_buckets - 1)  # (B,)
        category = torch.full((batch,), embodiment_id, dtype=torch.int64, device=self.device)
        return self.model.action_velocity(
            features.to(self.dtype),
            token_mask.to(self.device, torch.bool),
            image_mask.to(self.device, torch.bool),
            actions.to(self.dtype),
            buckets,
            states.to(self.device, self.dtype).view(batch, 1, -1),
            category,
            self._calls if fast else None,
        )

    def use_fast_layers(self) -> None:
        """Make sure the fast path's fused layers exist (uncompiled where the engine does not compile): for
        ``action_velocity(fast=True)`` on an engine loaded without compilation or graphs (the CPU)."""
        if self._calls is None:
            regions = self.family.fast_regions(self.model)
            self._calls = install_fast_path(self.model, regions, False)

    def _guided_graph_cache(self, max_weight: float, steps: int) -> GraphCache:
        """The CUDA graphs of "guided" chunks with these constants (the rest are inputs)."""
        key = (max_weight, steps)
        if key not in self._guided_graphs:
            self._guided_graphs[key] = GraphCache(functools.partial(self._fast_guided_chunk, *key), self.device)
        return self._guided_graphs[key]

    def _fast_guided_chunk(
        self, max_weight, steps, features, token_mask, image_mask, state, category, start, target, weights
    ) -> torch.Tensor:
        """One "guided" chunk with the fast callables: the function its graphs replay."""
        guidance = Guidance(target, weights, max_weight, steps)
        return self.model.action_chunk(
            features, token_mask, image_mask, state, category, start, self._calls, guidance=guidance
        )

    def _fast_chunk(self, features, token_mask, image_mask, state, category, start, strength) -> torch.Tensor:
        """One sample's chunk with the fast callables; the function the head's graphs replay. ``strength``
        (1, H, 1): ones, or RTC "prefix" mode's velocity scale (the prefix is in ``start``)."""
        return self.model.action_chunk(features, token_mask, image_mask, state, category, start, self._calls, strength)


def layout_image_mask(layout: TokenLayout, device: torch.device) -> torch.Tensor:
    """(1, L) bool: the image tokens of one sample's prompt."""
    mask = torch.zeros(1, layout.seq_len, dtype=torch.bool)
    for start, end in layout.image_ranges:
        mask[0, start:end] = True
    return mask.to(device, non_blocking=True)
