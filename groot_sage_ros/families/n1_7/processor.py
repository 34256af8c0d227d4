"""GR00T N1.7's processor: camera images + instruction -> model inputs, for serving, extraction and training.

Images follow NVIDIA's default N1.7 eval transform (LeRobot ``_transform_n1_7_image_for_vlm_torch``, the
path a checkpoint takes unless its processor_config.json asks for albumentations): the whole frame resized
to 256x256 (aspect ratio not kept), a centre crop of round(256 x 230/256) = 230 px (offset floored), and a
resize back to 256x256; both resizes bicubic, antialiased, rounded to uint8 as torchvision does. The
Qwen3-VL image processor then leaves 256x256 as it is (a multiple of patch x merge = 32, within its pixel
bounds), rescales and normalises with mean = std = 0.5 (``pixel_values``), and the vision tower cuts
16x16 patches merged 2x2: 64 image tokens a frame. The prompt is ``prompt.py``'s. Sequences in a batch
are padded on the right (exact for the causal LLM: backbone.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...api import TokenFacts, TokenLayout
from ..common.images import host_tensor, stack_frames, to_device, to_rgb_uint8
from ..common.processor_base import PromptProcessor, square_grid_facts
from ..common.tokenizer import Tokenizer
from .config import FAMILY_NAME, backbone_from_dict
from .prompt import (
    IMAGE_TOKEN_ID,
    INSTRUCTION_FORMATS,
    PAD_TOKEN_ID,
    check_instruction,
    layout_of,
    load_tokenizer,
    render_prompt,
)
from .statistics import PROCESSOR_FILE, processor_kwargs

PIXEL_MEAN = PIXEL_STD = 0.5  # Qwen3-VL's image processor


def pixel_values(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) uint8 preprocessed frames -> float32 in [-1, 1], as the Qwen3-VL fast image processor
    computes it (rescale and normalise fused: (x - 255 mean) / (255 std))."""
    return (images.float() - 255.0 * PIXEL_MEAN) / (255.0 * PIXEL_STD)


def bicubic_uint8(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, size, size) uint8: antialiased bicubic, rounded (torchvision's resize
    of a uint8 tensor)."""
    if tuple(frames.shape[-2:]) == (size, size):
        return frames
    out = F.interpolate(frames.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp_(0.0, 255.0).round_().to(torch.uint8)


def squash_crop_resize(frames: torch.Tensor, size: int, crop_fraction: float) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) uint8: NVIDIA's default N1.7 eval transform."""
    frames = bicubic_uint8(frames.permute(0, 3, 1, 2), size)  # (N, 3, size, size), aspect ratio not kept
    if 0.0 < crop_fraction < 1.0:
        crop = max(1, int(round(size * crop_fraction)))
        top = (size - crop) // 2
        frames = frames[..., top : top + crop, top : top + crop]
    return bicubic_uint8(frames, size)


@dataclass
class ProcessorConfig:
    image_size: int = 256
    crop_fraction: float = 230 / 256
    tokens_per_image: int = 64  # (256 / 16 / 2) ** 2
    instruction_format: str = "formalized"
    tokenizer: str | None = None  # None: built-in Qwen tiktoken; else a tokenizer folder

    def __post_init__(self) -> None:
        if self.instruction_format not in INSTRUCTION_FORMATS:
            raise ValueError(
                f"instruction_format {self.instruction_format!r}: expected one of {list(INSTRUCTION_FORMATS)}"
            )


def checkpoint_processor_config(
    root: Path, tokenizer: str | None = None, instruction_format: str | None = None
) -> ProcessorConfig:
    """The processor settings of a checkpoint folder: its config.json's frame size and crop, and what its
    processor_config.json (if any) says of the crop and of cleaning the language. ValueError naming the file
    for a transform the package does not implement or a frame size the model was not built for."""
    kwargs = processor_kwargs(root)
    source = root / PROCESSOR_FILE
    for flag in ("use_albumentations", "letter_box_transform"):
        if kwargs.get(flag):
            raise ValueError(
                f"{source}: {flag}=true asks for an image transform the package does not implement "
                "(only NVIDIA's default resize-crop-resize); set it false or use LeRobot"
            )
    backbone = backbone_from_dict(json.loads((root / "config.json").read_text()))
    size = backbone.image_size
    target, edge = kwargs.get("image_target_size") or [size, size], kwargs.get("shortest_image_edge")
    if list(target) != [size, size] or edge not in (None, size):
        raise ValueError(
            f"{source}: image_target_size {target} / shortest_image_edge {edge}: the model in config.json "
            f"reads {size}x{size} frames"
        )
    crop = kwargs.get("image_crop_size")
    fraction = kwargs.get("crop_fraction") or (crop[0] / size if crop else backbone.crop_fraction)
    formalized = kwargs.get("formalize_language", True) is not False
    return ProcessorConfig(
        image_size=size,
        crop_fraction=float(fraction),
        tokens_per_image=backbone.tokens_per_image,
        instruction_format=instruction_format or ("formalized" if formalized else "plain"),
        tokenizer=tokenizer,
    )


def token_facts(config: ProcessorConfig) -> TokenFacts:
    """The family's token facts for frames of ``config``'s size."""
    return square_grid_facts(FAMILY_NAME, IMAGE_TOKEN_ID, PAD_TOKEN_ID, config.tokens_per_image, config.image_size)


class N17Processor(PromptProcessor):
    """N1.7's ``api.Processor``: frame sets (camera images + instruction) -> ``ModelInputs``."""

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
            "crop_fraction": self.config.crop_fraction,
            "tokens_per_image": self.config.tokens_per_image,
        }

    def host_frames(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Camera images -> checked (H, W, 3) uint8 RGB tensors on the host."""
        return [host_tensor(to_rgb_uint8(image, f"camera {k}")) for k, image in enumerate(images)]

    def resize_frames(self, frames: Sequence[torch.Tensor], device: torch.device | str = "cpu") -> torch.Tensor:
        """(H, W, 3) uint8 host frames -> (N, 3, 256, 256) uint8 on ``device``; frames of one size in one call."""
        size, fraction = self.config.image_size, self.config.crop_fraction
        if len({frame.shape for frame in frames}) > 1:
            return torch.cat([squash_crop_resize(to_device(f, device)[None], size, fraction) for f in frames])
        return squash_crop_resize(stack_frames(frames, device), size, fraction)
