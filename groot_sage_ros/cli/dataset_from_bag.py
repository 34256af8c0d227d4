"""``groot-sage dataset-from-bag``: a bag recorded while groot_node ran, into the dataset format."""

from __future__ import annotations

from ..offline.config import DatasetFromBagConfig
from .common import add_options


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "dataset-from-bag",
        help="a bag recorded while groot_node ran -> the same dataset format",
        epilog="example: groot-sage dataset-from-bag live_run --camera-topics /camera/image_raw --out live_features",
    )
    parser.add_argument("bags", nargs="+", help="rosbag2 folders recorded with groot_node's ~/features and layout")
    parser.add_argument("--camera-topics", nargs="+", required=True, help="camera topics, in prompt order")
    add_options(parser, DatasetFromBagConfig, "features_topic")
    parser.add_argument("--out", required=True, help="dataset folder")
    add_options(parser, DatasetFromBagConfig, "tokenizer", "overwrite")
    parser.set_defaults(run=run, config_cls=DatasetFromBagConfig)


def run(config: DatasetFromBagConfig) -> int:
    from ..offline.feature_bag import dataset_from_bag

    manifest = dataset_from_bag(config)
    skipped = ", ".join(f"{k}={v}" for k, v in manifest["skipped"].items()) or "none"
    print(f"wrote {config.out}: {manifest['num_samples']} samples; skipped: {skipped}")
    return 0
