"""``sparserefine models``: the shipped checkpoints, one name a line (what ``--model`` takes)."""

from __future__ import annotations

from sparserefine_ros.models.registry import checkpoint_names, dense_model_names


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the shipped models, one name a line")
    parser.add_argument(
        "--families", action="store_true", help="list the dense model families instead"
    )
    parser.set_defaults(func=_list)


def _list(args) -> int:
    for name in dense_model_names() if args.families else checkpoint_names():
        print(name)
    return 0
