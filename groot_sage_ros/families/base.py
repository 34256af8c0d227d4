"""What a GR00T family provides to the generic engine, checkpoint loader and fast path.

A family is one package under ``families/`` (``n1_5/`` today): its config schema, checkpoint keys,
prompt and processor, modules, fast regions, tiny writer and statistics. Generic code never branches on
the family; it asks the ``ModelFamily`` object that ``families.detect`` returns for a ``config.json``.
Adding N1.7 means writing ``families/n1_7/`` against this interface and listing it in ``FAMILIES``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..api import Processor, TokenFacts
from .common.attention_maps import features_and_image_attention


@dataclass(frozen=True)
class CheckpointKeys:
    """How a family's ``model.safetensors`` keys map onto its module."""

    children: tuple[str, ...]  # top-level prefixes; a child that is not built has its keys skipped, never read
    optional: tuple[str, ...] = ()  # keys some checkpoints hold and the module never needs
    optional_prefixes: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)  # module key -> stored key to read when it is absent


@dataclass
class FastRegion:
    """A run of repeated layers that the fast path replaces by one fused, compiled function.

    ``build(layer)`` returns the layer's fast module: the ``FusedLinear`` groups it computes in one GEMM and
    the layer's other modules, shared (not copied). ``forward(fast_module, *inputs)`` is the layer's
    computation from that module; the engine compiles it once for every layer of the region and hands the
    model one callable per layer. ``varying_dims``: for each input after the fast module, the dims whose size
    changes between calls (batch, prompt length; a tuple input's tensors share one entry); they are compiled
    as symbols and every other dim (widths, heads) as a constant. Empty: fixed shapes."""

    name: str
    layers: Sequence[nn.Module]
    build: Callable[[nn.Module], nn.Module]
    forward: Callable[..., torch.Tensor]
    varying_dims: tuple[tuple[int, ...], ...] = ()


class FamilyModel(nn.Module):
    """The top module a family builds: state-dict keys equal the checkpoint's. Both calls take optional
    per-layer callables (``calls``, region name -> one callable per layer); without them, the modules as built."""

    has_backbone: bool
    has_action_head: bool
    action_horizon: int
    action_dim: int
    state_width: int
    timestep_buckets: int  # the head's flow-matching time, discretised

    def action_velocity(
        self, features, token_mask, image_mask, actions, bucket, state, embodiment_id, calls=None
    ) -> torch.Tensor:
        """The head's flow velocity (B, H, A) for noisy ``actions`` at timestep ``bucket`` (B,); differentiable.
        ``token_mask`` (B, L) bool marks real tokens (not padding), ``image_mask`` (B, L) the image tokens:
        a family whose head attends to parts of the prompt (N1.7) needs them, N1.5's ignores them. ``calls``:
        the fast path's per-layer callables (fused, maybe compiled), or None for the modules as built."""
        raise NotImplementedError

    def features(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, calls=None) -> torch.Tensor:
        """(B, L) ids, (N, 3, S, S) frames normalised -> (B, L, D) per-token features: the family's module
        at ``self.backbone`` (built when ``has_backbone``)."""
        if not self.has_backbone:
            raise ValueError("this model holds the action head only (loaded without its backbone)")
        return self.backbone(input_ids, pixel_values, calls)  # (B, L, D)

    def features_and_image_attention(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, calls=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``features`` (B, L, D) and the last kept layer's attention from each token to the image tokens,
        averaged over heads (B, L, T) (``common/attention_maps.py``); every sample has T image tokens."""
        if not self.has_backbone:
            raise ValueError("this model holds the action head only (loaded without its backbone)")
        backbone = self.backbone
        return features_and_image_attention(
            backbone, backbone.language_layers, input_ids, pixel_values, backbone.image_token_id, calls
        )

    def action_chunk(
        self, features, token_mask, image_mask, state, embodiment_id, noise, calls=None, strength=None, guidance=None
    ) -> torch.Tensor:
        """One sample's chunk: features (1, L, D), token and image masks (1, L) bool, state (1, 1, state_width),
        id (1,), noise (1, H, A) -> (1, H, A). Real-time chunking (``common/flow.py``): ``strength``
        (1, H, 1) scales each step's velocity ("prefix" mode, the prefix already in ``noise``); ``guidance``
        ("guided" mode) corrects each step towards the chunk it continues."""
        raise NotImplementedError

    def materialize_buffers(self, device: torch.device) -> None:
        """Rebuild non-persistent buffers (not in any checkpoint) after loading from the meta device: the
        backbone's (the heads have none)."""
        if self.has_backbone:
            self.backbone.materialize_buffers(device)


class ModelFamily(ABC):
    name: str  # registry name, recorded with every output (``TokenFacts.family``)
    keys: CheckpointKeys
    bucket_padding_exact: bool  # right-padding a prompt with the pad id leaves the real tokens' features unchanged

    @abstractmethod
    def matches(self, raw: dict[str, Any]) -> bool:
        """Whether a ``config.json`` (parsed) is this family's."""

    @abstractmethod
    def parse_config(self, raw: dict[str, Any], source: str) -> Any:
        """The validated config; ValueError naming ``source`` and the field. Nothing is allocated before this."""

    @abstractmethod
    def feature_dim(self, config: Any) -> int: ...

    def complete_files(self, files: Any, config: Any) -> Any:
        """The checkpoint's files with any weights the family keeps in another folder added
        (``CheckpointFiles.add_source``); called before loading a model with its backbone. Most layouts hold
        everything: the files unchanged."""
        return files

    @abstractmethod
    def build(self, config: Any, with_action_head: bool, with_backbone: bool = True) -> FamilyModel:
        """The module (call under ``torch.device("meta")``); a part not built has its weights never read
        (``with_backbone=False``: the action head alone, for a student's features)."""

    @abstractmethod
    def processor(
        self, tokenizer: str | None = None, instruction_format: str | None = None, root: Path | None = None
    ) -> Processor:
        """The family's processor; ``root``: the checkpoint folder, for a family that keeps processor settings
        in a file beside its config.json)."""

    @abstractmethod
    def token_facts(self) -> TokenFacts: ...

    @abstractmethod
    def fast_regions(self, model: FamilyModel) -> list[FastRegion]:
        """The model's repeated layers and their fused functions, backbone first."""

    @abstractmethod
    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) uint8 preprocessed frames -> float32 as the vision tower reads them."""

    @abstractmethod
    def normalizer(self, root: Path, embodiment: str | None, modes: dict[str, str] | None = None) -> Any:
        """An embodiment's ``EmbodimentNormalizer`` from the checkpoint folder's statistics (the family's files
        and format); ValueError naming the file for a missing or unknown embodiment."""

    @abstractmethod
    def full_size_config(self) -> dict[str, Any]:
        """The released checkpoint's ``config.json`` (for random full-size benchmarks)."""

    @abstractmethod
    def write_tiny(self, out: Path, seed: int, raw: dict[str, Any] | None = None, outliers: bool = False) -> Path:
        """Random weights in the real layout: the tiny config when ``raw`` is None; ``outliers`` plants the
        large-magnitude channels of a trained model (for quantisation checks)."""
