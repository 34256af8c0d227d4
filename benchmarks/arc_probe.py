"""Distilled against from scratch on a downstream task: a probe of the ARC renders' output grids (height,
width, colour set) from the teacher's features, the distilled student's (frozen), and a student of the same
shape trained from scratch on the labels for the same number of steps (``offline/probe.py``). Held-out ARC
tasks (the distilled student's split); accuracy, parameters and batch-1 latency, the teacher's too with
``--teacher``.

    python benchmarks/arc_probe.py --student run/student.safetensors --dataset arc_features \\
        --teacher CKPT --device cuda --out benchmarks/arc_probe_h100.json
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True, help="the distilled student.safetensors")
    parser.add_argument("--dataset", required=True, help="the ARC features dataset it was distilled from")
    parser.add_argument("--teacher", help="the teacher checkpoint, to time it and count its parameters")
    parser.add_argument("--steps", type=int, default=0, help="probe and from-scratch steps (default: the student's)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default: 32)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    import numpy as np
    import torch

    from groot_sage_ros.engine import load_engine
    from groot_sage_ros.offline.evaluate import latency
    from groot_sage_ros.offline.probe import run_probe

    report = run_probe(args.dataset, args.student, args.steps or None, args.batch, args.device, args.seed)
    device = torch.device(args.device)
    report["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if args.teacher:
        teacher = load_engine(args.teacher, device=args.device)
        inputs = teacher.prepare([([np.full((480, 640, 3), 127, dtype=np.uint8)], "solve the puzzle")])
        report["teacher"]["parameters"] = teacher.parameter_count
        report["teacher"]["batch1_ms_median"] = latency(lambda: teacher.forward(inputs), device)["batch1_ms_median"]
    report["command"] = "python benchmarks/arc_probe.py " + " ".join(sys.argv[1:])
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
