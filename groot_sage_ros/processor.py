"""One preprocessing path for serving, extraction and training: camera images + instruction -> model inputs.

Images follow Isaac-GR00T's N1.5 eval transform: centre crop to int(0.95 H) x int(0.95 W), bilinear
antialiased resize to 224x224, a uint8 round trip (Isaac's VideoToNumpy truncates), then Eagle's
rescale/normalise to [-1, 1] with mean = std = 0.5. All tensor ops, so they run on the model's device.

The prompt is Eagle 2.5 VL's chat template with one user turn, images first, then the instruction::

    <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n
    <image 1><img><IMG_CONTEXT>x256</img><image 2><img>...</img>['pick up the cube']<|im_end|>\n
    <|im_start|>assistant\n

The instruction is rendered as Isaac's inference path does (``str([text])``, the repr of a list), which
LeRobot also hard-codes; ``instruction_format="plain"`` sends the bare text instead. Sequences in a batch
are padded on the right (see model/backbone.py for why that is exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import IMAGE_TOKEN_ID, TOKENS_PER_IMAGE
from .tokenizer import SPECIAL_TOKENS, Tokenizer, load_tokenizer

SYSTEM_PROMPT = "You are a helpful assistant."
IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
PAD_TOKEN_ID = SPECIAL_TOKENS["<|endoftext|>"]
IM_END_ID = SPECIAL_TOKENS["<|im_end|>"]
IMG_END_ID = SPECIAL_TOKENS[IMG_END]


@dataclass
class ProcessorConfig:
    image_size: int = 224
    crop_scale: float = 0.95
    tokens_per_image: int = TOKENS_PER_IMAGE
    instruction_format: str = "list_repr"  # "list_repr" (Isaac/LeRobot inference) or "plain"
    tokenizer: str | None = None  # None: built-in Qwen tiktoken; else a tokenizer/processor folder

    def __post_init__(self) -> None:
        if self.instruction_format not in ("list_repr", "plain"):
            raise ValueError(f"instruction_format {self.instruction_format!r}: expected 'list_repr' or 'plain'")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"crop_scale {self.crop_scale} must be in (0, 1]")


@dataclass(frozen=True)
class TokenLayout:
    """Where things are in one sample's token sequence. Ranges are [start, end) token indices."""

    seq_len: int
    image_ranges: tuple[tuple[int, int], ...]  # the <IMG_CONTEXT> run of each camera, camera order
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
    input_ids: torch.Tensor  # (B, L) int64, right padded with <|endoftext|>
    attention_mask: torch.Tensor  # (B, L) int64
    images: torch.Tensor  # (B * cameras, 3, 224, 224) uint8, the preprocessed frames, sample-major
    layouts: list[TokenLayout] = field(default_factory=list)

    @property
    def pixel_values(self) -> torch.Tensor:
        """(B * cameras, 3, 224, 224) float32 in [-1, 1]: what the vision tower reads."""
        return normalize(self.images)


def to_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """HxWx3 uint8 RGB from gray (HxW, HxWx1), RGB, RGBA (alpha dropped), 8 or 16 bit; else ValueError."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an HxW, HxWx1, HxWx3 or HxWx4 array, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name}: zero-sized image {image.shape}")
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # rounded 16 -> 8 bit
    elif image.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 or uint16 pixels, got {image.dtype}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return image


def centre_crop_box(height: int, width: int, crop_scale: float) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centre crop, with torchvision CenterCrop's offsets."""
    crop_h, crop_w = int(height * crop_scale), int(width * crop_scale)
    if crop_h == 0 or crop_w == 0:
        raise ValueError(f"image of {height}x{width} is too small to crop by {crop_scale}")
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0)), crop_h, crop_w


def crop_and_resize(image: torch.Tensor, size: int, crop_scale: float) -> torch.Tensor:
    """(H, W, 3) or (N, H, W, 3) uint8 -> (3, size, size) or (N, 3, size, size) uint8: centre crop,
    antialiased bilinear resize, truncation. A stack of same-sized frames is resized in one call."""
    single = image.dim() == 3
    frames = image.unsqueeze(0) if single else image  # (N, H, W, 3)
    top, left, crop_h, crop_w = centre_crop_box(*frames.shape[1:3], crop_scale)
    nchw = frames[:, top : top + crop_h, left : left + crop_w].permute(0, 3, 1, 2)  # (N, 3, h, w)
    pixels = nchw.float() / 255.0
    if (crop_h, crop_w) != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = (pixels.clamp_(0.0, 1.0) * 255.0).to(torch.uint8)  # (N, 3, size, size)
    return out[0] if single else out


def host_tensor(array: np.ndarray) -> torch.Tensor:
    """A host array as a tensor sharing its memory when it can (a copy if read-only or not contiguous)."""
    return torch.from_numpy(np.require(array, requirements=["C", "W"]))


def to_device(array: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A host array on ``device``; to CUDA through pinned memory, so the copy does not wait for queued work
    (a copy from pageable memory would block the host until the GPU has finished everything queued)."""
    tensor = array if isinstance(array, torch.Tensor) else host_tensor(array)
    if torch.device(device).type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 in [-1, 1] (Eagle: rescale 1/255, mean = std = 0.5)."""
    return (images.float() / 255.0 - 0.5) / 0.5


class Processor:
    """Turns frame sets (camera images + instruction) into ``ModelInputs``."""

    def __init__(self, config: ProcessorConfig | None = None, tokenizer: Tokenizer | None = None):
        self.config = config or ProcessorConfig()
        self.tokenizer = tokenizer or load_tokenizer(self.config.tokenizer)
        self._encode_cached = lru_cache(maxsize=64)(self._encode)

    def prompt(self, num_images: int, instruction: str) -> str:
        if num_images < 1:
            raise ValueError("a frame set needs at least one camera image")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        for token in SPECIAL_TOKENS:
            if token in instruction:
                raise ValueError(f"instruction contains the special token {token!r}")
        text = str([instruction]) if self.config.instruction_format == "list_repr" else instruction
        context = IMG_CONTEXT * self.config.tokens_per_image
        images = "".join(f"<image {k}>{IMG_START}{context}{IMG_END}" for k in range(1, num_images + 1))
        return (
            f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
            f"<|im_start|>user\n{images}{text}<|im_end|>\n<|im_start|>assistant\n"
        )

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
        """Camera images -> checked (H, W, 3) uint8 RGB tensors on the host (cheap: no resize; the extractor's
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


def layout_of(ids: Sequence[int], num_images: int, tokens_per_image: int) -> TokenLayout:
    """Find each camera's <IMG_CONTEXT> run and the instruction tokens in a prompt's ids."""
    runs, start = [], None
    for i, token in enumerate(list(ids) + [-1]):
        if token == IMAGE_TOKEN_ID and start is None:
            start = i
        elif token != IMAGE_TOKEN_ID and start is not None:
            runs.append((start, i))
            start = None
    if len(runs) != num_images or any(end - begin != tokens_per_image for begin, end in runs):
        raise ValueError(f"prompt has image runs {runs}, expected {num_images} of {tokens_per_image} tokens")
    last_img_end = max(i for i, t in enumerate(ids) if t == IMG_END_ID)
    im_end = ids.index(IM_END_ID, last_img_end)
    return TokenLayout(seq_len=len(ids), image_ranges=tuple(runs), instruction_range=(last_img_end + 1, im_end))
