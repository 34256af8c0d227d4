"""The contract between the engines and everything that uses them (nodes, offline tools, CLI, benchmarks).

    from groot_sage_ros.engine import load_engine
    engine = load_engine("nvidia/GR00T-N1.5-3B", device="cuda")     # a FeatureEngine
    result = engine.extract([front_rgb, wrist_rgb], "pick up the cube")
    result.features        # (1, L, D) on the engine's device
    result.layout          # TokenLayout: image token ranges per camera, instruction range
    engine.facts           # TokenFacts: the family and its token ids, recorded with every output

Callers use these types and protocols only: never an engine's model, family config or private methods.
This module imports nothing else of the package (the bottom of the import order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch

FrameSet = tuple[Sequence[np.ndarray], str]  # the camera images (HxWx3 uint8 RGB, camera order) and the instruction


# The precisions an engine can run its repeated layers in (``fastpath/precision.py`` holds what each one
# does, keyed by these names; node configs and the command line offer these).
PRECISION_NAMES = ("fp16", "int8_weight", "fp8")


RTC_MODES = ("off", "prefix", "guided")  # real-time chunking: none, hard inpainting, guided inpainting


@dataclass(frozen=True)
class ChunkPrefix:
    """What a new action chunk continues (real-time chunking, ``families/common/flow.py``): the previous
    chunk's actions from the new chunk's first step on, in the head's normalised space."""

    actions: torch.Tensor  # (H, A): row k is the previous chunk's action at the new chunk's step k
    frozen: int  # the steps the robot executes before the new chunk arrives: kept exactly ("prefix" mode)
    overlap: int  # the steps the previous chunk still covers (rows past it are not used)
    mode: str = "prefix"  # "prefix" or "guided"
    ramp_rate: float = 6.0  # "prefix": the ramp 1 - exp(-r t) over the overlap after the frozen steps
    max_guidance: float = 10.0  # "guided": the largest guidance weight
    guided_steps: int = -1  # "guided": the first denoising steps corrected through the head's Jacobian; -1: all

    def __post_init__(self) -> None:
        horizon = self.actions.shape[0]
        if self.mode not in RTC_MODES[1:]:
            raise ValueError(f"chunk prefix mode {self.mode!r}: expected one of {list(RTC_MODES[1:])}")
        if not 0 <= self.frozen <= self.overlap <= horizon:
            raise ValueError(f"chunk prefix: need 0 <= frozen ({self.frozen}) <= overlap ({self.overlap}) <= {horizon}")


@dataclass(frozen=True)
class TokenFacts:
    """What a model family's prompts look like: recorded in datasets, layout messages and student
    checkpoints, so that nothing downstream assumes one family's constants."""

    family: str  # the family's registry name (families.FAMILIES)
    image_token_id: int  # the id each image's token run is made of
    pad_token_id: int  # right padding of a batch
    tokens_per_image: int
    patch_grid: tuple[int, int]  # (rows, columns) of image tokens per image
    image_size: int  # side of the square frame the model reads

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "image_token_id": self.image_token_id,
            "pad_token_id": self.pad_token_id,
            "tokens_per_image": self.tokens_per_image,
            "patch_grid": list(self.patch_grid),
            "image_size": self.image_size,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "token facts") -> "TokenFacts":
        """From a record; ValueError naming ``source`` and the field when one is missing or malformed."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected an object with the family's token facts, got {type(data).__name__}")
        try:
            facts = cls(
                family=str(data["family"]),
                image_token_id=int(data["image_token_id"]),
                pad_token_id=int(data["pad_token_id"]),
                tokens_per_image=int(data["tokens_per_image"]),
                patch_grid=tuple(int(v) for v in data["patch_grid"]),
                image_size=int(data["image_size"]),
            )
        except KeyError as err:
            raise ValueError(f"{source}: missing field {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: malformed token facts ({err})") from None
        rows_cols = facts.patch_grid
        if len(rows_cols) != 2 or rows_cols[0] * rows_cols[1] != facts.tokens_per_image or facts.tokens_per_image < 1:
            raise ValueError(
                f"{source}: patch_grid {list(rows_cols)} does not hold tokens_per_image={facts.tokens_per_image}"
            )
        return facts


@dataclass(frozen=True)
class TokenLayout:
    """Where things are in one sample's token sequence. Ranges are [start, end) token indices."""

    seq_len: int
    image_ranges: tuple[tuple[int, int], ...]  # the image token run of each camera, camera order
    instruction_range: tuple[int, int]  # the rendered instruction's tokens

    def to_dict(self) -> dict:
        return {
            "seq_len": self.seq_len,
            "image_ranges": [list(r) for r in self.image_ranges],
            "instruction_range": list(self.instruction_range),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "TokenLayout":
        return cls(
            seq_len=int(data["seq_len"]),
            image_ranges=tuple(tuple(r) for r in data["image_ranges"]),
            instruction_range=tuple(data["instruction_range"]),
        )


@dataclass
class ModelInputs:
    input_ids: torch.Tensor  # (B, L) int64, right padded with the family's pad id
    attention_mask: torch.Tensor  # (B, L) int64, 1 = token of the sample
    images: torch.Tensor  # (B * cameras, 3, S, S) uint8, the preprocessed frames, sample-major
    layouts: list[TokenLayout] = field(default_factory=list)


@dataclass
class FeatureResult:
    features: torch.Tensor  # (B, L, D) on the engine's device, engine dtype
    attention_mask: torch.Tensor  # (B, L), 1 = token of the sample, 0 = right padding
    layouts: list[TokenLayout]
    images: torch.Tensor = field(repr=False)  # (B * cameras, 3, S, S) uint8 preprocessed frames
    # (B, L, T) the last kept layer's attention to the T image tokens (``forward(image_attention=True)``)
    image_attention: torch.Tensor | None = field(default=None, repr=False)

    @property
    def layout(self) -> TokenLayout:
        """The layout of the first (for ``extract``, the only) sample."""
        return self.layouts[0]


Prompt = tuple[tuple[int, ...], TokenLayout]  # one sample's token ids and layout


class Processor(Protocol):
    """Frame sets -> ``ModelInputs``: the one preprocessing path for serving, extraction and training.

    The steps are exposed separately so that the offline pipeline can run the host-side ones on reader
    threads and the rest on the model's device."""

    facts: TokenFacts

    def check_instruction(self, instruction: str) -> None:
        """ValueError when the model cannot take ``instruction`` (empty, holds a special token)."""

    def encode(self, num_images: int, instruction: str) -> Prompt:
        """Token ids and layout of one sample's prompt."""

    def host_frames(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Camera images -> checked (H, W, 3) uint8 RGB tensors on the host; ValueError for a bad image."""

    def resize_frames(self, frames: Sequence[torch.Tensor], device: torch.device | str = "cpu") -> torch.Tensor:
        """Host frames -> (N, 3, S, S) uint8 on ``device``, transformed as the model was trained."""

    def preprocess_images(self, images: Sequence[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
        """``resize_frames(host_frames(images))``."""

    def collate(
        self, prompts: Sequence[Prompt], images: torch.Tensor, device: torch.device | str = "cpu"
    ) -> ModelInputs:
        """Right-pad prompts into one batch and pair them with preprocessed frames."""

    def __call__(self, frame_sets: Sequence[FrameSet], device: torch.device | str = "cpu") -> ModelInputs:
        """All of the above for a batch of frame sets."""

    def describe(self) -> dict[str, Any]:
        """What a dataset records about the preprocessing (tokenizer, instruction format, sizes)."""


class FeatureEngine(Protocol):
    """Per-token features for frame sets: the teacher (a GR00T family) and the student serve this."""

    model_id: str
    device: torch.device
    dtype: torch.dtype
    processor: Processor
    facts: TokenFacts
    feature_dim: int
    parameter_count: int
    has_action_head: bool
    action_horizon: int  # with the head: steps of a chunk
    action_dim: int  # with the head: width of a normalised action
    state_width: int  # with the head: width of the normalised, zero-padded state vector
    start_seconds: float  # from the call that built it to the first features
    capture_seconds: float  # CUDA graph warm-up and capture so far (each new input shape costs one)

    def prepare(self, frame_sets: Sequence[FrameSet]) -> ModelInputs:
        """Preprocess on the engine's device."""

    def forward(self, inputs: ModelInputs) -> FeatureResult:
        """The fast path: no host synchronisation, results stay on the device."""

    def forward_reference(self, inputs: ModelInputs) -> FeatureResult:
        """The modules as built, in plain PyTorch; safe to call beside ``forward`` from another thread."""

    def extract(self, images: Sequence[np.ndarray], instruction: str) -> FeatureResult:
        """One frame set."""

    def extract_batch(self, frame_sets: Sequence[FrameSet]) -> FeatureResult:
        """Several frame sets; each sample's features equal its batch-of-one features."""

    def warmup(self, cameras: int = 1, instruction: str = "warm up", batch: int = 1) -> None:
        """Compile and capture for this input shape before the first real frame."""

    def start_report(self) -> dict[str, Any]:
        """How the start went (load and warm-up seconds, compile cache, graphs) for diagnostics."""

    def action_policy(self, embodiment: str, modes: dict[str, str] | None = None) -> "ActionPolicy":
        """The action head with ``embodiment``'s statistics; ValueError without a head or statistics."""

    def action_velocity(
        self, features: torch.Tensor, actions: torch.Tensor, t: torch.Tensor, states: torch.Tensor, embodiment_id: int
    ) -> torch.Tensor:
        """The head's flow velocity (B, H, A) at times ``t`` (B,) in [0, 1); differentiable in the features."""

    def predict_actions(
        self,
        result: FeatureResult,
        states: torch.Tensor,
        embodiment_id: int,
        seed: int | None = None,
        reference: bool = False,
        prefix: ChunkPrefix | None = None,
    ) -> torch.Tensor:
        """Normalised chunks (B, horizon, action_dim) from normalised, zero-padded states (B, state_width);
        with ``prefix``, each continues that previous chunk (real-time chunking)."""


class ActionPolicy(Protocol):
    """Robot-unit state in, action chunk in robot units out (the flow-matching head and its statistics)."""

    embodiment: str
    state_keys: list[str]
    action_keys: list[str]
    horizon: int
    # The embodiment's statistics: state_vector(state, width), split_actions(chunk), embodiment_id, the keys'
    # widths; for callers that work on normalised chunks (quantize-check, evaluate, distill's objective).
    normalizer: Any

    def zero_state(self) -> dict[str, np.ndarray]:
        """A state of zeros for every state key (robot units)."""

    def normalised_chunk(
        self, result: FeatureResult, state: dict[str, np.ndarray], seed: int | None = None, reference: bool = False
    ) -> torch.Tensor:
        """The chunk ``chunk`` splits into robot units: (horizon, action_dim) normalised, on the host."""

    def chunk(
        self, result: FeatureResult, state: dict[str, np.ndarray], seed: int | None = None, reference: bool = False
    ) -> dict[str, np.ndarray]:
        """One chunk for the first sample of ``result``: action key -> (horizon, width) in robot units.
        ValueError naming the key for a state that does not fit the embodiment."""
