"""Reading image files into the arrays the processor takes (PIL; no ROS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


def read_image(path: str | Path) -> np.ndarray:
    """An image file as an array ``to_rgb_uint8`` accepts: 8/16-bit gray, RGB or RGBA."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(image, dtype=np.uint16)
            if image.mode == "I":
                array = np.asarray(image)
                if array.min() < 0 or array.max() > 65535:
                    raise ValueError(f"{path}: 32-bit integer image with values outside 0..65535")
                return array.astype(np.uint16)
            if image.mode not in ("L", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.mode or image.mode == "P" else "RGB")
            return np.asarray(image)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
