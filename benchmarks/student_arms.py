"""One JSON (and the README's table) from the outputs of ``student_arms.sh``: per arm (features, both, actions,
attention) the held-out token cosine and action error ratio from ``evaluate``, the training pace from the
run's log, and the student's batch-1 latency; the baselines; the latency and memory of student + head
against teacher + head; the probe and extract's timing when they ran.

    python benchmarks/student_arms.py --results DIR --gpu "NVIDIA H100 80GB HBM3" --out student_arms_h100.json

The pace: ``distill`` logs its mean steps/s since the start (compilation included) every ``--log-every``
steps; ``steady`` is the pace between the last two log lines.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ARMS = ("features", "both", "actions", "attention")
LOG_LINE = re.compile(r"distill: step (\d+)/\d+ .* ([\d.]+) steps/s")
WROTE = re.compile(r"wrote \S+/s_([\w@.]+)/student.safetensors")


def pace(log: Path) -> dict[str, dict]:
    """Per arm, from ``arms.log``: steps/s over the whole run and between its last two log lines."""
    paces, lines = {}, []
    for text in log.read_text().splitlines() if log.is_file() else []:
        if match := LOG_LINE.search(text):
            lines.append((int(match[1]), float(match[2])))
        elif (match := WROTE.search(text)) and lines:
            (s0, r0), (s1, r1) = lines[-2] if len(lines) > 1 else (0, 1.0), lines[-1]
            steady = (s1 - s0) / (s1 / r1 - s0 / r0) if len(lines) > 1 else r1
            paces[match[1]] = {"steps_per_s_whole_run": r1, "steps_per_s_steady": round(steady, 2)}
            lines = []
    return paces


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="the folder student_arms.sh wrote ($OUT)")
    parser.add_argument("--gpu", required=True, help="the GPU model the run used")
    parser.add_argument("--note", default="", help="what the reader should know about the run (default: none)")
    parser.add_argument("--out", required=True, help="the JSON to write")
    args = parser.parse_args()
    results = Path(args.results)
    paces = pace(results / "arms.log")
    report: dict = {"gpu": args.gpu, "command": "bash benchmarks/student_arms.sh " + " ".join(ARMS), "arms": {}}
    if args.note:
        report["note"] = args.note
    extra = sorted(p.stem[len("eval_") :] for p in results.glob("eval_*.json"))  # both@W: other action weights
    for arm in [*ARMS, *(arm for arm in extra if arm not in ARMS)]:
        path = results / f"eval_{arm}.json"
        if not path.is_file():
            report["arms"][arm] = {"ran": False}
            continue
        evaluation = json.loads(path.read_text())
        student = evaluation["student"]
        report["arms"][arm] = {
            "token_cosine_mean": student["token_cosine_mean"],
            "action_error_ratio_mean": student.get("action_error_ratio_mean"),
            "action_error_ratio_worst_decile": student.get("action_error_ratio_worst_decile"),
            "action_rel_l2_mean": student.get("action_rel_l2_mean"),
            "batch1_ms_median": student.get("batch1_ms_median"),
            **paces.get(arm, {}),
        }
        for name in ("mean_feature_baseline", "untrained_baseline", "teacher"):
            report.setdefault("baselines", {})[name] = evaluation.get(name)
    for name in ("student_head_latency", "arc_probe", "extract_with_attention_timing"):
        path = results / f"{name}.json"
        report[name] = json.loads(path.read_text()) if path.is_file() else {"ran": False}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["arms"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
