"""``groot-sage evaluate``: a student's held-out fidelity against two baselines; latency and memory."""

from __future__ import annotations

import sys

from ..offline.config import EvaluateConfig
from .common import add_options, optional_fields


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="held-out fidelity of a student against two baselines; latency and memory",
        epilog="example: groot-sage evaluate --student student/student.safetensors --dataset arc_features "
        "--json eval.json",
    )
    parser.add_argument("--student", required=True, help="student.safetensors (or its run folder)")
    parser.add_argument("--dataset", required=True, help="the dataset the student was distilled from")
    add_options(parser, EvaluateConfig, "teacher", "allow_unknown_teacher")
    add_options(parser, EvaluateConfig, "embodiment", nargs="?", const="")
    add_options(
        parser, EvaluateConfig, *optional_fields(EvaluateConfig, "teacher", "allow_unknown_teacher", "embodiment")
    )
    parser.set_defaults(run=run, config_cls=EvaluateConfig)


def run(config: EvaluateConfig) -> int:
    from ..offline.evaluate import run_evaluate

    report = run_evaluate(config)
    for name in ("student", "mean_feature_baseline", "untrained_baseline"):
        r = report[name]
        print(
            f"{name:22s} token cosine {r['token_cosine_mean']:.4f} (median {r['token_cosine_median']:.4f}), "
            f"token MSE {r['token_mse_mean']:.4f}, pooled cosine {r['pooled_cosine_mean']:.4f}"
        )
        if "action_error_ratio_mean" in r:
            print(
                f"{'':22s} action error ratio {r['action_error_ratio_mean']:.4f} "
                f"(worst decile {r['action_error_ratio_worst_decile']:.4f})"
            )
    for name in ("student", "teacher"):
        if name in report:
            print(
                f"{name:22s} {report[name]['parameters']:,} parameters, "
                f"batch-1 {report[name]['batch1_ms_median']:.2f} ms"
            )
    gate = report.get("gate")
    if gate and not gate["met"]:
        print(
            f"groot-sage evaluate: the student's mean action error ratio "
            f"{report['student']['action_error_ratio_mean']:.4f} is above the gate {gate['action_error_ratio']} "
            "(--action-ratio-gate; 0: report only)",
            file=sys.stderr,
        )
        return 1
    return 0
