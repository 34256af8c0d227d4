"""GR00T N1.5's processor: camera images + instruction -> model inputs, for serving, extraction and training.

Images follow Isaac-GR00T's N1.5 eval transform: centre crop to int(0.95 H) x int(0.95 W), bilinear
antialiased resize to 224x224, a uint8 round trip (Isaac's VideoToNumpy truncates), then Eagle's
rescale/normalise to [-1, 1] with mean = std = 0.5 (``pixel_values``). The prompt is ``prompt.py``'s.
Sequences in a batch are padded on the right (see backbone.py for why that is exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ...api import TokenFacts, TokenLayout
from ..common.images import (
    centre_crop_box,
    crop_and_resize,
    host_tensor,
    normalize,
    stack_frames,
    to_device,
    to_rgb_uint8,
)
from ..common.processor_base import PromptProcessor, square_grid_facts
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
    """The family's token facts for frames of ``config``'s size."""
    return square_grid_facts(FAMILY_NAME, IMAGE_TOKEN_ID, PAD_TOKEN_ID, config.tokens_per_image, config.image_size)


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


class N15Processor(PromptProcessor):
    """N1.5's ``api.Processor``: turns frame sets (camera images + instruction) into ``ModelInputs``."""

    def __init__(self, config: ProcessorConfig | None = None, tokenizer: Tokenizer | None = None):
        config = config or ProcessorConfig()
        super().__init__(config, tokenizer or load_tokenizer(config.tokenizer), token_facts(config))

    def prompt(self, num_images: int, instruction: str) -> str:
        return render_prompt(num_images, instruction, self.config.tokens_per_image, self.config.instruction_format)

    def layout(self, ids, num_images: int) -> TokenLayout:
        return layout_of(ids, num_images, self.config.tokens_per_image)

    def check_instruction(self, instruction: str) -> None:
        check_instruction(instruction)

    def describe(self) -> dict:
        return {
            "tokenizer": self.tokenizer.name,
            "instruction_format": self.config.instruction_format,
            "image_size": self.config.image_size,
            "tokens_per_image": self.config.tokens_per_image,
        }

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
        return crop_and_resize(stack_frames(frames, device), size, scale)
