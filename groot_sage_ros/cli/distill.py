"""``groot-sage distill``: train the SAGE student on a teacher-feature dataset."""

from __future__ import annotations

from ..offline.config import DistillConfig
from .common import add_options, optional_fields


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "distill",
        help="train the SAGE student on a teacher-feature dataset",
        epilog="example: groot-sage distill arc_features --out student --max-steps 2000 --device cuda",
    )
    parser.add_argument("dataset", help="a dataset folder written by extract or dataset-from-bag")
    parser.add_argument(
        "--out", required=True, help="run folder: student.safetensors, last.safetensors, metrics.jsonl, plots"
    )
    add_options(parser, DistillConfig, "max_steps", "device")
    add_options(parser.add_mutually_exclusive_group(), DistillConfig, "resume", "overwrite")
    add_options(parser, DistillConfig, *optional_fields(DistillConfig, "max_steps", "device", "resume", "overwrite"))
    parser.set_defaults(run=run, config_cls=DistillConfig)


def run(config: DistillConfig) -> int:
    from ..offline.distill import run_distill

    metrics = run_distill(config)
    if metrics and not metrics.get("finished_before"):
        held = f", held-out cosine {metrics['eval_cosine']:.4f}" if "eval_cosine" in metrics else ""
        print(f"wrote {config.out}/student.safetensors after {metrics['step']} steps: loss {metrics['loss']:.4f}{held}")
        print(f"throughput: {metrics['samples_per_s']:.1f} samples/s ({metrics['processes']} process(es))")
    return 0
