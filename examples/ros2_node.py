"""A ROS 2 node around `lldif_edge.app.Recognizer`: sensor_msgs/Image in, vision_msgs/Detection2DArray out.

    ros2 run ... or: python examples/ros2_node.py --ros-args -p package:=/path/to/pkg -r image:=/camera/image_raw

The logic is the Recognizer's (tested without ROS); this file only converts messages. Needs rclpy,
sensor_msgs and vision_msgs (ROS 2 Humble or newer; not installable on the project's CI machines, so this
glue has not been run there). `image_to_bgr` and `face_records` are plain Python and are unit-tested.
"""

from __future__ import annotations

import numpy as np

ENCODINGS = {"bgr8": (3, None), "rgb8": (3, "rgb"), "mono8": (1, None), "bgra8": (4, None), "rgba8": (4, "rgb")}


def image_to_bgr(height: int, width: int, encoding: str, step: int, data: bytes) -> np.ndarray:
    """A sensor_msgs/Image payload -> a BGR (or grey) uint8 array, without cv_bridge."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding '{encoding}' (use one of {', '.join(ENCODINGS)})")
    channels, order = ENCODINGS[encoding]
    rows = np.frombuffer(data, np.uint8).reshape(height, step)[:, : width * channels]
    img = rows.reshape(height, width, channels) if channels > 1 else rows.reshape(height, width)
    if order == "rgb":
        img = img[..., [2, 1, 0]] if channels == 3 else img[..., [2, 1, 0, 3]]
    return np.ascontiguousarray(img[..., :3] if channels == 4 else img)


def face_records(faces) -> list[dict]:
    """Recognizer faces -> what one Detection2D carries: box centre/size and (class id, score) hypotheses."""
    out = []
    for f in faces:
        x, y, w, h = f.box
        hyps = sorted(f.probabilities.items(), key=lambda kv: -kv[1])
        out.append({"center": (x + w / 2.0, y + h / 2.0), "size": (float(w), float(h)),
                    "id": str(f.track_id), "hypotheses": hyps})
    return out


def main() -> None:
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    from lldif_edge.app import Recognizer

    class ExpressionNode(Node):
        def __init__(self):
            super().__init__("lldif_edge")
            package = self.declare_parameter("package", "").value or None
            backend = self.declare_parameter("backend", "onnxruntime").value
            self.recognizer = Recognizer.load(package, backend=backend)
            self.pub = self.create_publisher(Detection2DArray, "expressions", 10)
            self.create_subscription(Image, "image", self.on_image, qos_profile_sensor_data)

        def on_image(self, msg: Image) -> None:
            frame = image_to_bgr(msg.height, msg.width, msg.encoding, msg.step, bytes(msg.data))
            out = Detection2DArray(header=msg.header)
            for rec in face_records(self.recognizer.process(frame, stream=msg.header.frame_id)):
                det = Detection2D(header=msg.header, id=rec["id"])
                det.bbox.center.position.x, det.bbox.center.position.y = rec["center"]
                det.bbox.size_x, det.bbox.size_y = rec["size"]
                for class_id, score in rec["hypotheses"]:
                    hyp = ObjectHypothesisWithPose()
                    hyp.hypothesis.class_id, hyp.hypothesis.score = class_id, float(score)
                    det.results.append(hyp)
                out.detections.append(det)
            self.pub.publish(out)

    rclpy.init()
    node = ExpressionNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
