"""Batch-1 latency of each GR00T family's full model on one GPU: ``groot-sage bench`` with random weights in
the released shapes (``--full-size-random``), the action head, and the eager reference path in the same
process (``--compare eager``), one fresh process per family, one JSON with every family and the GPU.

    python benchmarks/family_speed.py --out benchmarks/family_speed_h100.json

A family whose result is already in ``--work`` is not run again (a cut-off run resumes where it stopped).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

FAMILIES = ("gr00t_n1_5", "gr00t_n1_7")
KEYS = (
    "backbone_ms_median",
    "backbone_ms_p95",
    "action_head_ms_median",
    "full_ms_median",
    "full_ms_p95",
    "eager_backbone_ms_median",
    "eager_full_ms_median",
    "backbone_speedup",
    "full_speedup",
    "features_vs_eager",
    "actions_vs_eager",
    "peak_allocated_gb",
    "start_in_process_s",
    "action_horizon",
    "seq_len",
    "device",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), help=f"(default: {' '.join(FAMILIES)})")
    parser.add_argument("--iters", type=int, default=100, help="timed calls per path (default: 100)")
    parser.add_argument("--dtype", default="float16", help="(default: float16)")
    parser.add_argument("--work", default="family_speed_work", help="per-family results (default: family_speed_work)")
    parser.add_argument("--out", required=True, help="the combined JSON")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for family in args.families:
        path = work / f"{family}.json"
        command = [
            sys.executable,
            "-m",
            "groot_sage_ros.cli",
            "bench",
            "--full-size-random",
            "--family",
            family,
            "--device",
            "cuda",
            "--dtype",
            args.dtype,
            "--actions",
            "--compare",
            "eager",
            "--iters",
            str(args.iters),
            "--out",
            str(path),
        ]
        if not path.exists():
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                return done.returncode
        report = json.loads(path.read_text())
        results[family] = {key: report.get(key) for key in KEYS} | {"command": " ".join(command[2:])}
    combined = {"gpu": next(iter(results.values()))["device"], "families": results, "command": " ".join(sys.argv)}
    Path(args.out).write_text(json.dumps(combined, indent=2) + "\n")
    print(json.dumps(combined, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
