"""``groot-sage make-bag``: ARC-AGI tasks or a folder of photos into a rosbag2 bag."""

from __future__ import annotations

import json

from ..offline.config import MakeBagConfig
from .common import add_options, optional_fields


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "make-bag",
        help="ARC-AGI tasks or a folder of photos -> a rosbag2 bag of camera frames and instructions",
        epilog="example: groot-sage make-bag --out arc_bag --arc --limit 20",
    )
    parser.add_argument("--out", required=True, help="bag folder to create")
    source = parser.add_mutually_exclusive_group(required=True)
    add_options(source, MakeBagConfig, "arc", "images")
    add_options(parser, MakeBagConfig, *optional_fields(MakeBagConfig, "arc", "images"))
    parser.set_defaults(run=run, config_cls=MakeBagConfig)


def run(config: MakeBagConfig) -> int:
    from ..offline.make_bag import make_bag

    summary = make_bag(config)
    print(
        json.dumps(summary)
        if config.json
        else f"wrote {summary['bag']}: {summary['frames']} frames on {summary['camera_topic']}, "
        f"{summary['instructions']} instructions on {summary['instruction_topic']} ({summary['storage']})"
    )
    return 0
