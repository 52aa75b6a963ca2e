"""``sparserefine replay BAG``: play a bag onto live topics, like ``ros2 bag play`` (which a
pip-only ROS 2 lacks), with its timing: rate, loop, start offset, optional /clock."""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("replay", help="publish a rosbag2 with its timing")
    parser.add_argument("bag", type=Path, help="rosbag2 folder, or its .mcap / .db3 file")
    parser.add_argument("--topics", nargs="+", default=(), help="play only these topics")
    parser.add_argument("--rate", type=float, default=1.0, help="speed factor (2 = twice)")
    parser.add_argument("--start-offset", type=float, default=0.0,
                        help="seconds into the bag to start at")  # fmt: skip
    parser.add_argument("--loop", action="store_true", help="repeat until Ctrl-C")
    parser.add_argument("--clock", action="store_true", help="publish the bag time on /clock")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for each topic to get a subscriber")  # fmt: skip
    parser.set_defaults(func=run)


def run(args) -> int:
    from sparserefine_ros.bags.io import BagError
    from sparserefine_ros.ros.replay import replay

    try:
        sent = replay(args.bag, args.topics, args.rate, args.start_offset, args.loop, args.clock,
                      args.wait_for_subscribers)  # fmt: skip
    except BagError as error:
        print(f"sparserefine replay: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print(f"replayed {sent} messages from {args.bag}")
    return 0
