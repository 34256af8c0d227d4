"""``groot-sage extract``: bags in, a teacher-feature dataset out (and optionally a bag with the features)."""

from __future__ import annotations

from ..offline.config import ExtractConfig, RuntimeOptions
from .common import add_options, add_runtime_args, optional_fields


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "extract",
        help="bags -> teacher-feature dataset (and optionally a bag with a features topic)",
        epilog="example: groot-sage extract arc_bag --checkpoint nvidia/GR00T-N1.5-3B --camera-topics "
        "/camera/image_raw --instruction-topic /instruction --out arc_features --device cuda --batch-size 32",
    )
    parser.add_argument("bags", nargs="+", help="rosbag2 folders (MCAP or sqlite3)")
    parser.add_argument("--checkpoint", required=True, help="teacher checkpoint folder or cached HF repo id")
    parser.add_argument("--camera-topics", nargs="+", required=True, help="camera topics, in prompt order")
    add_options(parser, ExtractConfig, "instruction_topic", "instruction")
    parser.add_argument("--out", required=True, help="dataset folder")
    runtime = optional_fields(RuntimeOptions)  # added last, by add_runtime_args
    add_options(parser, ExtractConfig, *optional_fields(ExtractConfig, "instruction_topic", "instruction", *runtime))
    add_runtime_args(parser)
    parser.set_defaults(run=run, config_cls=ExtractConfig)


def run(config: ExtractConfig) -> int:
    from ..offline.extract import run_extract

    manifest = run_extract(config)
    if manifest:  # rank 0
        skipped = ", ".join(f"{k}={v}" for k, v in manifest["skipped"].items()) or "none"
        print(
            f"wrote {config.out}: {manifest['num_samples']} samples in {len(manifest['shards'])} shards, "
            f"feature dim {manifest['teacher']['feature_dim']}; skipped: {skipped}"
        )
        timing = manifest["timing"]
        print(
            f"throughput: {timing['frame_sets_per_s']:.1f} frame sets/s ({timing['frame_sets']} in "
            f"{timing['seconds']:.1f} s, {timing['processes']} process(es), model loading excluded)"
        )
        if config.out_bag:
            print(f"wrote {config.out_bag} with the features on /groot_node/features")
    return 0
