"""The ROS 2 example's message conversions (the node glue itself needs ROS 2, absent here)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lldif_edge.app.recognizer import Face

spec = importlib.util.spec_from_file_location("ros2_node", Path(__file__).parents[1] / "examples" / "ros2_node.py")
ros2_node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ros2_node)


def test_image_to_bgr_handles_encodings_and_row_padding():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.zeros((2, 12), np.uint8)  # step 12 > 3*3: rows carry padding
    padded[:, :9] = rgb.reshape(2, 9)
    bgr = ros2_node.image_to_bgr(2, 3, "rgb8", 12, padded.tobytes())
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])
    mono = ros2_node.image_to_bgr(2, 3, "mono8", 3, bytes(range(6)))
    assert mono.shape == (2, 3)
    with pytest.raises(ValueError, match="16UC1"):
        ros2_node.image_to_bgr(2, 3, "16UC1", 6, bytes(12))


def test_face_records_carry_class_names_as_ids():
    face = Face((10, 20, 30, 40), 7, "happy", 0.8, {"happy": 0.8, "sad": 0.2}, 0.9)
    (rec,) = ros2_node.face_records([face])
    assert rec["center"] == (25.0, 40.0) and rec["size"] == (30.0, 40.0) and rec["id"] == "7"
    assert rec["hypotheses"][0] == ("happy", 0.8)
