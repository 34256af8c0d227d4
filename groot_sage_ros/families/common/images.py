"""Image operations every family's processor uses: checks, centre crop and resize as tensors, transfers.

All tensor ops, so they run on the model's device; the crop offsets are torchvision CenterCrop's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 (x / 255 - mean) / std : the family gives mean and std."""
    return (images.float() / 255.0 - mean) / std


def stack_frames(frames, device: torch.device | str) -> torch.Tensor:
    """Same-sized (H, W, 3) uint8 host frames -> (N, H, W, 3) on ``device``: one pinned buffer, one transfer."""
    pin = torch.device(device).type == "cuda"
    stacked = torch.empty((len(frames), *frames[0].shape), dtype=torch.uint8, pin_memory=pin)  # (N, H, W, 3)
    torch.stack(frames, out=stacked)
    return stacked.to(device, non_blocking=True)
