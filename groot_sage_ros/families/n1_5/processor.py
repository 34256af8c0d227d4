"""GR00T N1.5's processor: camera images + instruction -> model inputs, for serving, extraction and training.

Images follow Isaac-GR00T's N1.5 eval transform: centre crop to int(0.95 H) x int(0.95 W), bilinear
antialiased resize to 224x224, a uint8 round trip (Isaac's VideoToNumpy truncates), then Eagle's
rescale/normalise to [-1, 1] with mean = std = 0.5 (``pixel_values``). The prompt is ``prompt.py``'s.
Sequences in a batch are padded on the right (see backbone.py for why that is exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from ...api import ModelInputs, TokenFacts, TokenLayout
from ..common.images import (
    centre_crop_box,
    crop_and_resize,
    host_tensor,
    normalize,
    to_device,
    to_rgb_uint8,
)
from ..common.tokenizer import Tokenizer
from .config import FAMILY_NAME
from .prompt import (
    IMAGE_TOKEN_ID,
    INSTRUCTION_FORMATS,
    PAD_TOKEN_ID,
    check_instruction,
    layout_of,
    load_tokenizer,
    render_prompt,
)

TOKENS_PER_IMAGE = 256  # one 224x224 tile, 16x16 patches, no pixel shuffle
PIXEL_MEAN = PIXEL_STD = 0.5  # Eagle's image processor


def pixel_values(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, 224, 224) uint8 preprocessed frames -> float32 in [-1, 1]: what the vision tower reads."""
    return normalize(images, PIXEL_MEAN, PIXEL_STD)


def token_facts(config: "ProcessorConfig") -> TokenFacts:
    grid = int(round(config.tokens_per_image**0.5))  # a square grid of patches, one token each
    return TokenFacts(
        family=FAMILY_NAME,
        image_token_id=IMAGE_TOKEN_ID,
        pad_token_id=PAD_TOKEN_ID,
        tokens_per_image=config.tokens_per_image,
        patch_grid=(grid, grid),
        image_size=config.image_size,
    )


@dataclass
class ProcessorConfig:
    image_size: int = 224
    crop_scale: float = 0.95
    tokens_per_image: int = TOKENS_PER_IMAGE
    instruction_format: str = "list_repr"  # "list_repr" (Isaac/LeRobot inference) or "plain"
    tokenizer: str | None = None  # None: built-in Qwen tiktoken; else a tokenizer/processor folder

    def __post_init__(self) -> None:
        if self.instruction_format not in INSTRUCTION_FORMATS:
            raise ValueError(f"instruction_format {self.instruction_format!r}: expected 'list_repr' or 'plain'")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"crop_scale {self.crop_scale} must be in (0, 1]")


class N15Processor:
    """N1.5's ``api.Processor``: turns frame sets (camera images + instruction) into ``ModelInputs``."""

    def __init__(self, config: ProcessorConfig | None = None, tokenizer: Tokenizer | None = None):
        self.config = config or ProcessorConfig()
        self.tokenizer = tokenizer or load_tokenizer(self.config.tokenizer)
        self._encode_cached = lru_cache(maxsize=64)(self._encode)
        self.facts = token_facts(self.config)

    def prompt(self, num_images: int, instruction: str) -> str:
        return render_prompt(num_images, instruction, self.config.tokens_per_image, self.config.instruction_format)

    def check_instruction(self, instruction: str) -> None:
        check_instruction(instruction)

    def describe(self) -> dict:
        return {
            "tokenizer": self.tokenizer.name,
            "instruction_format": self.config.instruction_format,
            "image_size": self.config.image_size,
            "tokens_per_image": self.config.tokens_per_image,
        }

    def encode(self, num_images: int, instruction: str) -> tuple[tuple[int, ...], TokenLayout]:
        """Token ids and layout of one sample's prompt (cached: a robot repeats its instruction)."""
        return self._encode_cached(num_images, instruction)

    def _encode(self, num_images: int, instruction: str) -> tuple[tuple[int, ...], TokenLayout]:
        ids = self.tokenizer.encode(self.prompt(num_images, instruction))
        return tuple(ids), layout_of(ids, num_images, self.config.tokens_per_image)

    def preprocess_images(self, images: Sequence[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
        """Camera images (any size, see ``to_rgb_uint8``) -> (N, 3, 224, 224) uint8 on ``device``."""
        return self.resize_frames(self.host_frames(images), device)

    def host_frames(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Camera images -> checked (H, W, 3) uint8 RGB tensors on the host (cheap: no resize; the engine's
        reader threads run it, the model's device does the rest)."""
        frames = []
        for k, image in enumerate(images):
            rgb = to_rgb_uint8(image, f"camera {k}")
            centre_crop_box(rgb.shape[0], rgb.shape[1], self.config.crop_scale)  # raises for too small a frame
            frames.append(host_tensor(rgb))
        return frames

    def resize_frames(self, frames: Sequence[torch.Tensor], device: torch.device | str = "cpu") -> torch.Tensor:
        """(H, W, 3) uint8 host frames -> (N, 3, 224, 224) uint8, cropped and resized on ``device``. Frames of one
        size (the usual case) are stacked into one pinned buffer, copied in one transfer and resized in one call."""
        size, scale = self.config.image_size, self.config.crop_scale
        if len({frame.shape for frame in frames}) > 1:
            return torch.stack([crop_and_resize(to_device(frame, device), size, scale) for frame in frames])
        pin = torch.device(device).type == "cuda"
        stacked = torch.empty((len(frames), *frames[0].shape), dtype=torch.uint8, pin_memory=pin)  # (N, H, W, 3)
        torch.stack(frames, out=stacked)
        return crop_and_resize(stacked.to(device, non_blocking=True), size, scale)

    def __call__(
        self,
        frame_sets: Sequence[tuple[Sequence[np.ndarray], str]],
        device: torch.device | str = "cpu",
    ) -> ModelInputs:
        """A batch of (camera images, instruction) -> padded model inputs on ``device``."""
        if not frame_sets:
            raise ValueError("empty batch: expected at least one frame set")
        encoded = [self.encode(len(images), instruction) for images, instruction in frame_sets]
        images = self.preprocess_images([img for images, _ in frame_sets for img in images], device)
        return self.collate(encoded, images, device)

    def collate(self, encoded, images: torch.Tensor, device: torch.device | str = "cpu") -> ModelInputs:
        """Pad encoded prompts on the right and pair them with preprocessed uint8 images."""
        lengths = [len(ids) for ids, _ in encoded]
        length = max(lengths)
        padded = np.full((len(encoded), length), PAD_TOKEN_ID, dtype=np.int64)
        for row, (ids, _) in enumerate(encoded):
            padded[row, : len(ids)] = ids  # numpy takes a tuple of ints about 8x faster than torch.tensor
        input_ids = torch.from_numpy(padded)  # (B, L)
        attention_mask = (torch.arange(length) < torch.tensor(lengths)[:, None]).long()  # (B, L)
        expected = sum(len(layout.image_ranges) for _, layout in encoded)
        if images.shape[0] != expected:
            raise ValueError(f"{images.shape[0]} images for prompts that hold {expected} image slots")
        return ModelInputs(
            input_ids=to_device(input_ids, device),
            attention_mask=to_device(attention_mask, device),
            images=images,
            layouts=[layout for _, layout in encoded],
        )
