"""Camera messages (sensor_msgs/Image and CompressedImage) -> numpy arrays, without ROS.

Duck-typed on the message fields, so the same code decodes rclpy messages in the node and rosbags
messages in the offline tools: one decoding path for serving and for training data.

Raw encodings: rgb8, bgr8, rgba8, bgra8, mono8, mono16 (either endianness), 8UC1, 8UC3, 16UC1, with row
padding (``step``). Compressed: whatever PIL decodes (JPEG, PNG; 16-bit PNG stays 16-bit).
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

# encoding -> (channels, numpy dtype, channel order to take RGB from)
ENCODINGS = {
    "rgb8": (3, np.uint8, (0, 1, 2)),
    "bgr8": (3, np.uint8, (2, 1, 0)),
    "rgba8": (4, np.uint8, (0, 1, 2)),
    "bgra8": (4, np.uint8, (2, 1, 0)),
    "mono8": (1, np.uint8, None),
    "mono16": (1, np.uint16, None),
    "8UC3": (3, np.uint8, (0, 1, 2)),  # assumed RGB
    "8UC1": (1, np.uint8, None),
    "16UC1": (1, np.uint16, None),
}


class BadImage(ValueError):
    """A message that cannot become a camera image; ``reason`` is the counter name."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def cdr_header_stamp_ns(data: bytes) -> int:
    """The header stamp of a serialised message whose first field is a std_msgs/Header (Image,
    CompressedImage), read from the CDR bytes without deserialising the rest: 4 bytes of encapsulation
    (byte 1 = 1 for little endian), then stamp.sec (int32) and stamp.nanosec (uint32)."""
    if len(data) < 12:
        raise BadImage("corrupt_message", f"serialised message of {len(data)} bytes is too short for a header")
    sec, nanosec = struct.unpack_from("<iI" if data[1] & 1 else ">iI", data, 4)
    return sec * 1_000_000_000 + nanosec


def deserialize_checked(deserialize, data: bytes, msgtype):
    """``deserialize(data, msgtype)``, with any failure of a damaged CDR payload (rosbags and rclpy raise
    many kinds) turned into BadImage("corrupt_message"): a bad message is a counted skip, never fatal."""
    try:
        return deserialize(data, msgtype)
    except Exception as err:  # noqa: BLE001 -- whatever the deserialiser raises on bad bytes
        name = getattr(msgtype, "__name__", msgtype)
        raise BadImage(
            "corrupt_message", f"{len(data)}-byte {name} message does not deserialise ({type(err).__name__})"
        ) from None


def image_to_array(msg) -> np.ndarray:
    """A raw ``sensor_msgs/Image`` as HxWx3 uint8 RGB, or HxW uint8/uint16 for mono encodings."""
    if msg.encoding not in ENCODINGS:
        raise BadImage(
            "unknown_encoding", f"unsupported encoding {msg.encoding!r}; expected one of {sorted(ENCODINGS)}"
        )
    channels, dtype, order = ENCODINGS[msg.encoding]
    if msg.height == 0 or msg.width == 0:
        raise BadImage("zero_size", f"zero-sized image {msg.width}x{msg.height}")
    row_bytes = msg.width * channels * np.dtype(dtype).itemsize
    if msg.step < row_bytes or len(msg.data) != msg.step * msg.height:
        raise BadImage(
            "size_mismatch",
            f"{msg.encoding} {msg.width}x{msg.height}: step {msg.step} and {len(msg.data)} data bytes, "
            f"expected step >= {row_bytes} and step * height bytes",
        )
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, :row_bytes]
    pixels = rows.copy().view(dtype if not msg.is_bigendian else np.dtype(dtype).newbyteorder(">"))
    pixels = pixels.astype(dtype, copy=False).reshape(msg.height, msg.width, channels)
    if order is None:
        return pixels[:, :, 0]
    if channels == 3 and order == (0, 1, 2):
        return pixels  # already RGB (and contiguous: the copy above made it so)
    return np.ascontiguousarray(pixels[:, :, list(order)])


def compressed_to_array(msg) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (JPEG, PNG) decoded to an array the processor takes."""
    if len(msg.data) == 0:
        raise BadImage("zero_size", f"empty compressed image (format {msg.format!r})")
    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(image).astype(np.uint16)
            if image.mode not in ("L", "RGB", "RGBA"):
                image = image.convert("RGB")
            return np.asarray(image)
    except PILImage.DecompressionBombError as err:  # a header claiming billions of pixels
        raise BadImage("image_too_large", f"{msg.format or 'compressed'} image refused: {err}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise BadImage("corrupt_compressed", f"cannot decode {msg.format or 'compressed'} image ({err})") from None


def message_to_array(msg) -> np.ndarray:
    """Either kind of camera message: CompressedImage has ``format``, Image has ``encoding``."""
    return compressed_to_array(msg) if hasattr(msg, "format") else image_to_array(msg)
