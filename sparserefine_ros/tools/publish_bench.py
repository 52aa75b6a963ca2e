"""``sparserefine publish-bench``: what each of the node's image outputs costs to build and publish.

Segments one generated scene with the model, then for each output builds its message with the
node's own code (``ros.image_codec.output_messages``) and publishes it to a subscriber in the
same process over real DDS (Fast DDS LARGE_DATA, a private domain), ``--repeats`` times: median
milliseconds to build the message (colours, overlay, the copy into the message) and for the
``publish`` call, and for delivery to the subscriber.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from sparserefine_ros.tools.arguments import parse_size


def register(subparsers) -> None:
    parser = subparsers.add_parser("publish-bench", help="cost of building and publishing outputs",
                                   description=__doc__)  # fmt: skip
    parser.add_argument("--size", type=parse_size, default=(2048, 1024), help="WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=20, help="messages per output")
    parser.add_argument("--model", default="", help="model name or checkpoint (default model)")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.set_defaults(func=run)


def run(args) -> int:
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from sparserefine_ros.models import DEFAULT_MODEL, init_model
    from sparserefine_ros.ros.device import class_id_format
    from sparserefine_ros.ros.image_codec import OUTPUTS, output_messages
    from sparserefine_ros.tools.soak import scene

    pipeline = init_model(args.model or DEFAULT_MODEL)
    rgb = scene(args.size)
    result = pipeline.segment_numpy(rgb)
    dtype, encoding = class_id_format(len(pipeline.class_names))
    classes = result.classes[0].numpy().astype(dtype)

    rclpy.init()
    node = rclpy.create_node("publish_bench")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    arrived: dict[str, float] = {}
    publishers = {name: node.create_publisher(Image, f"bench/{name}", qos) for name in OUTPUTS}
    for name in OUTPUTS:
        node.create_subscription(Image, f"bench/{name}",
                                 lambda _, name=name: arrived.update({name: time.perf_counter()}),
                                 qos)  # fmt: skip
    deadline = time.monotonic() + 30.0
    while any(p.get_subscription_count() == 0 for p in publishers.values()):
        if time.monotonic() > deadline:
            raise SystemExit("publish-bench: the subscriptions did not match within 30 s")
        rclpy.spin_once(node, timeout_sec=0.1)
    rows = {}
    for name in OUTPUTS:
        build, publish, delivery = [], [], []
        for _ in range(args.repeats):
            arrived.pop(name, None)
            start = time.perf_counter()
            message = output_messages(
                [name], Header(frame_id="bench"), rgb, classes,
                lambda: result.entropy[0].numpy(), lambda: result.refine_mask[0].numpy(),
                pipeline.palette, 0.5, encoding,
            )[name]  # fmt: skip
            built = time.perf_counter()
            publishers[name].publish(message)
            sent = time.perf_counter()
            while name not in arrived and time.perf_counter() - sent < 5.0:
                rclpy.spin_once(node, timeout_sec=0.01)
            build.append(built - start)
            publish.append(sent - built)
            if name in arrived:
                delivery.append(arrived[name] - sent)
        rows[name] = {
            "encoding": message.encoding,
            "megabytes": len(message.data) / 1e6,
            "build_ms": statistics.median(build) * 1e3,
            "publish_ms": statistics.median(publish) * 1e3,
            "delivery_ms": statistics.median(delivery) * 1e3 if delivery else None,
            "delivered": len(delivery),
        }
        print(f"{name:<19} {message.encoding:<6} {rows[name]['megabytes']:5.1f} MB  build "
              f"{rows[name]['build_ms']:6.1f} ms  publish {rows[name]['publish_ms']:6.1f} ms  "
              f"delivered {len(delivery)}/{args.repeats}", flush=True)  # fmt: skip
    node.destroy_node()
    rclpy.try_shutdown()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"size": list(args.size), "repeats": args.repeats, "outputs": rows}
        args.json.write_text(json.dumps(report, indent=1))
    return 0
