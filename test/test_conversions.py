"""Camera message decoding and feature message encoding, byte for byte."""

import numpy as np
import pytest
from sensor_msgs.msg import Image

from groot_sage_ros.ros.conversions import (
    BadImage,
    array_to_image,
    features_to_image_msg,
    image_msg_to_features,
    image_to_array,
)

RGB = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)


def raw(encoding: str, pixels: np.ndarray, pad: int = 0, bigendian: bool = False) -> Image:
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1).view(np.uint8)
    rows = np.concatenate([rows, np.zeros((height, pad), np.uint8)], axis=1)
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        step=rows.shape[1],
        is_bigendian=int(bigendian),
        data=rows.tobytes(),
    )


@pytest.mark.parametrize("pad", [0, 5])
def test_color_encodings_come_out_rgb(pad):
    assert np.array_equal(image_to_array(raw("rgb8", RGB, pad)), RGB)
    assert np.array_equal(image_to_array(raw("bgr8", RGB[:, :, ::-1].copy(), pad)), RGB)
    rgba = np.dstack([RGB, np.full((2, 3), 9, np.uint8)])
    assert np.array_equal(image_to_array(raw("rgba8", rgba, pad)), RGB)
    bgra = np.dstack([RGB[:, :, ::-1], np.full((2, 3), 9, np.uint8)])
    assert np.array_equal(image_to_array(raw("bgra8", bgra, pad)), RGB)


def test_mono_encodings_keep_their_depth_and_endianness():
    mono8 = np.array([[1, 2], [3, 4]], np.uint8)
    assert np.array_equal(image_to_array(raw("mono8", mono8[:, :, None])), mono8)
    mono16 = np.array([[1, 513], [65535, 256]], np.uint16)
    assert np.array_equal(image_to_array(raw("mono16", mono16[:, :, None])), mono16)
    big = mono16.astype(">u2")
    out = image_to_array(raw("mono16", big[:, :, None], bigendian=True))
    assert out.dtype == np.uint16 and np.array_equal(out, mono16)


def test_step_mismatch_and_unknown_encoding_are_named():
    msg = raw("rgb8", RGB)
    msg.step = 5  # shorter than a row
    with pytest.raises(BadImage, match="step 5") as err:
        image_to_array(msg)
    assert err.value.reason == "size_mismatch"
    with pytest.raises(BadImage, match="'nv12'"):
        image_to_array(Image(height=1, width=1, encoding="nv12", step=1, data=b"\0"))


@pytest.mark.parametrize("dtype, encoding", [("float32", "32FC1"), ("float16", "16FC1")])
def test_features_round_trip(dtype, encoding):
    features = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    msg = features_to_image_msg(features, Image().header, dtype)
    assert (msg.height, msg.width, msg.encoding) == (7, 5, encoding)
    np.testing.assert_allclose(image_msg_to_features(msg), features, atol=1e-3 if dtype == "float16" else 0)


def test_array_to_image_round_trip():
    for encoding in ("rgb8", "bgr8"):
        assert np.array_equal(image_to_array(array_to_image(RGB, encoding=encoding)), RGB)


def test_header_stamp_is_read_from_cdr_bytes():
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage

    from groot_sage_ros.ros.conversions import cdr_header_stamp_ns

    for msg in (array_to_image(RGB), CompressedImage(format="jpeg", data=b"123")):
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_123, 456_789
        msg.header.frame_id = "some_frame"
        assert cdr_header_stamp_ns(serialize_message(msg)) == 1_700_000_123_000_456_789
    with pytest.raises(BadImage, match="too short"):
        cdr_header_stamp_ns(b"\x00\x01\x00")
