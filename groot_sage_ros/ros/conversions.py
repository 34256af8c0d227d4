"""sensor_msgs <-> numpy for the nodes: feature matrices out, test images in (numpy only, no cv_bridge).

Camera decoding lives in the ROS-free ``groot_sage_ros.decoding`` (shared with the offline tools) and is
re-exported here for the nodes.
"""

from __future__ import annotations

import json
import struct

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from ..serving.decoding import (  # noqa: F401 -- re-exported for the nodes
    ENCODINGS,
    BadImage,
    cdr_header_stamp_ns,
    compressed_to_array,
    deserialize_checked,
    image_to_array,
    message_to_array,
    stamp_ns,
)


def array_to_image(rgb: np.ndarray, header=None, encoding: str = "rgb8") -> Image:
    """HxWx3 uint8 RGB -> ``sensor_msgs/Image`` (rgb8 or bgr8)."""
    msg = Image()
    if header is not None:
        msg.header = header
    pixels = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding, msg.is_bigendian, msg.step = encoding, 0, rgb.shape[1] * 3
    msg.data = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return msg


def camera_message(rgb: np.ndarray, kind: type):
    """HxWx3 uint8 RGB as a camera message of ``kind``: ``Image`` (rgb8) or ``CompressedImage`` (JPEG)."""
    if kind is CompressedImage:
        import io

        from PIL import Image as PILImage

        buffer = io.BytesIO()
        PILImage.fromarray(rgb).save(buffer, format="JPEG", quality=90)
        return CompressedImage(format="jpeg", data=buffer.getvalue())
    return array_to_image(rgb)


def features_to_image_msg(features: np.ndarray, header, dtype: str = "float32") -> Image:
    """(L, D) features -> ``sensor_msgs/Image``: height = tokens, width = feature dim, 32FC1 or 16FC1."""
    np_dtype, encoding = (np.float16, "16FC1") if dtype == "float16" else (np.float32, "32FC1")
    matrix = np.ascontiguousarray(features, dtype=np_dtype)  # (L, D)
    msg = Image()
    msg.header = header
    msg.height, msg.width = matrix.shape
    msg.encoding, msg.is_bigendian = encoding, 0
    msg.step = matrix.shape[1] * matrix.itemsize
    msg.data = matrix.tobytes()
    return msg


CDR_LITTLE_ENDIAN = b"\x00\x01\x00\x00"  # the encapsulation header rmw puts before a message's CDR


def features_to_cdr(features: np.ndarray, header, dtype: str = "float32") -> bytes:
    """The serialised ``sensor_msgs/Image`` of ``features_to_image_msg``, built directly: the features are
    copied once, with no Python message object and no second pass through the C serialiser (about 2.4 MB a
    frame at full size). ``Publisher.publish`` takes the bytes as they are."""
    np_dtype, encoding = (np.float16, "16FC1") if dtype == "float16" else (np.float32, "32FC1")
    matrix = np.ascontiguousarray(features, dtype=np_dtype)  # (L, D)
    body = bytearray()

    def u32(value: int) -> None:
        body.extend(b"\0" * (-len(body) % 4))  # CDR aligns a 4-byte field to 4, counted from the body's start
        body.extend(struct.pack("<I", value))

    def string(text: str) -> None:
        raw = text.encode() + b"\0"
        u32(len(raw))
        body.extend(raw)

    body.extend(struct.pack("<iI", header.stamp.sec, header.stamp.nanosec))
    string(header.frame_id)
    u32(matrix.shape[0])  # height
    u32(matrix.shape[1])  # width
    string(encoding)
    body.append(0)  # is_bigendian
    u32(matrix.shape[1] * matrix.itemsize)  # step
    u32(matrix.nbytes)  # data: sequence<uint8> length, then the bytes
    return b"".join((CDR_LITTLE_ENDIAN, body, memoryview(matrix).cast("B")))


def image_msg_to_features(msg: Image) -> np.ndarray:
    """The inverse of ``features_to_image_msg``: (L, D) float32."""
    dtypes = {"32FC1": np.float32, "16FC1": np.float16}
    if msg.encoding not in dtypes:
        raise BadImage("unknown_encoding", f"feature image encoding {msg.encoding!r}, expected 32FC1 or 16FC1")
    matrix = np.frombuffer(msg.data, dtype=dtypes[msg.encoding]).reshape(msg.height, msg.width)
    return matrix.astype(np.float32)


def layout_json(layout: dict) -> str:
    return json.dumps(layout, sort_keys=True)
