"""sensor_msgs/Image decoding: every supported encoding, padded rows, and each malformed case."""

import cv2
import numpy as np
import pytest
from ros_harness import image_msg
from sensor_msgs.msg import CompressedImage, Image

from sparserefine_ros.image_messages import ImageError, compressed_to_rgb, image_to_rgb
from sparserefine_ros.ros.image_codec import to_image_msg

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_decode_to_the_same_rgb(encoding):
    np.testing.assert_array_equal(image_to_rgb(image_msg(RGB, encoding)), RGB)


def test_mono8_becomes_grey_rgb():
    decoded = image_to_rgb(image_msg(RGB, "mono8"))
    grey = cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY)
    assert decoded.shape == (5, 7, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[:, :, channel], grey)


def test_padded_rows_are_cropped_to_the_width():
    msg = image_msg(RGB, "rgb8")
    padded = np.zeros((5, 7 * 3 + 11), dtype=np.uint8)
    padded[:, : 7 * 3] = RGB.reshape(5, -1)
    msg.step, msg.data = padded.shape[1], padded.tobytes()
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize("bigendian", [0, 1])
def test_16_bit_keeps_the_high_byte(bigendian):
    wide = RGB.astype(np.uint16) * 256 + 77
    msg = Image(height=5, width=7, encoding="rgb16", is_bigendian=bigendian, step=7 * 6)
    msg.data = wide.astype(">u2" if bigendian else "<u2").tobytes()
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"encoding": "yuv422"}, "unsupported encoding 'yuv422'"),
        ({"height": 0, "data": b""}, "empty image"),
        ({"step": 20}, "step 20 is shorter than a row of 21 bytes"),
        ({"data": bytes(5 * 21 - 1)}, "data holds 104 bytes"),
    ],
)
def test_malformed_images_say_why(change, reason):
    msg = image_msg(RGB, "rgb8")
    for field, value in change.items():
        setattr(msg, field, value)
    with pytest.raises(ImageError, match=reason):
        image_to_rgb(msg)


def test_compressed_png_round_trip_and_garbage():
    ok, png = cv2.imencode(".png", RGB[:, :, ::-1])
    assert ok
    msg = CompressedImage(format="png", data=png.tobytes())
    np.testing.assert_array_equal(compressed_to_rgb(msg), RGB)
    with pytest.raises(ImageError, match="cannot decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"not an image"))


def test_outputs_round_trip_with_header():
    msg = image_msg(RGB, "rgb8", stamp_ns=1_500_000_000, frame_id="front")
    entropy = RNG.random((5, 7), dtype=np.float32)
    out = to_image_msg(entropy, "32FC1", msg.header)
    assert (out.encoding, out.height, out.width, out.step) == ("32FC1", 5, 7, 28)
    assert out.header.frame_id == "front" and out.header.stamp.sec == 1
    np.testing.assert_array_equal(np.frombuffer(out.data, np.float32).reshape(5, 7), entropy)
