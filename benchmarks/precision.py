"""Every precision, and the mixed ones ``quantize-check --auto`` proposes, on one GPU; the gates on checkpoints
with and without outlier channels.

Gates (``groot-sage quantize-check``): int8_weight and fp8 against fp16 on a full-size random N1.5 checkpoint
with planted outlier channels and on one without, and ``--auto`` for each precision on the outlier one (the
smallest set of projections kept at fp16 that passes the gates). Speed and memory (``groot-sage bench``,
batch 1 with the head, back-to-back calls at batch 64, random weights in the released shapes, a fresh process
each): fp16, int8_weight, fp8 and the two mixes for N1.5, then fp16, int8_weight and fp8 for N1.7. The
routes inside a precision (int8 through the Triton kernel for every call or for none, fp8's FP8 GEMM for every
call) are set with ``--route NAME`` (``ROUTES``), off by default. Random weights are a proxy: run
quantize-check on your own.

Each step writes into the JSON as it ends and is skipped when the JSON already has it, so a run cut off by
``--limit-s`` goes on where it stopped when called again with the same ``--out`` and ``--work``.

    python benchmarks/precision.py --out precision_h100.json --work /tmp/precision
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BENCH = "--full-size-random --batch 1 --actions --iters 40 --warmup 5 --throughput-batch 64 --throughput-calls 10"
KEYS = ("backbone_ms_median", "action_head_ms_median", "full_ms_median", "throughput_fps", "peak_allocated_gb")
# --route NAME: (precision, extra bench arguments, {weight dtype: weight_only_gemm.KERNEL_MAX_ROWS})
ROUTES = {
    "int8_weight_kernel": ("int8_weight", [], {"torch.int8": 2048}),
    "int8_weight_dequantised": ("int8_weight", [], {"torch.int8": 0}),  # the head's calls dequantised too
    "fp8_scaled_mm_every_call": ("fp8", ["--fp8-min-rows", "0"], {}),
    "fp8_small_calls_dequantised": ("fp8", [], {"torch.float8_e4m3fn": 0}),
}
CLI = (
    "import sys, torch\n"
    "import groot_sage_ros.fastpath.weight_only_gemm as gemm\n"
    "for dtype, rows in {routes}.items(): gemm.KERNEL_MAX_ROWS[eval(dtype)] = rows\n"
    "from groot_sage_ros.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-s", type=float, default=520.0, help="skip steps past this (default: 520)")
    parser.add_argument(
        "--work", default="/tmp/precision", help="checkpoints and step outputs (default: /tmp/precision)"
    )
    parser.add_argument("--route", action="append", default=[], choices=sorted(ROUTES), help="also bench a route")
    parser.add_argument("--out", required=True, help="the JSON, rewritten after each step and read to resume")
    args = parser.parse_args()
    start = time.time()
    os.makedirs(args.work, exist_ok=True)
    report = json.load(open(args.out)) if os.path.isfile(args.out) else {}
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    report.setdefault("gpu", gpu.stdout.strip())
    report["command"] = "python benchmarks/precision.py " + " ".join(sys.argv[1:])

    def save() -> None:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)

    def step(section: str, name: str, argv: list[str], result=None, routes=None, timeout: float = 300) -> dict | None:
        """Run ``groot-sage argv`` in a fresh process (unless done before); the JSON it wrote, or None."""
        entry = report.setdefault(section, {}).get(name)
        if entry and entry.get("rc") in (0, 1):
            return entry.get("report")
        left = args.limit_s - (time.time() - start)
        entry = report[section][name] = {"argv": argv, "kernel_max_rows": routes}
        if left < 30:
            entry["skipped"] = "out of time"
            save()
            return None
        tick = time.time()
        try:
            done = subprocess.run(
                [sys.executable, "-c", CLI.format(routes=routes or {}), *argv],
                capture_output=True,
                text=True,
                timeout=min(timeout, left),
            )
        except subprocess.TimeoutExpired:
            entry["skipped"] = f"timed out after {min(timeout, left):.0f} s"
            save()
            return None
        entry.update(rc=done.returncode, seconds=round(time.time() - tick, 1))
        if done.returncode not in (0, 1):
            entry["stderr_tail"] = done.stderr[-1500:]
        elif result and os.path.isfile(result):
            entry["report"] = json.load(open(result))
        save()
        return entry.get("report")

    # In the order of what matters most when time runs out: the mixes --auto proposes and their speed first.
    outliers, plain = os.path.join(args.work, "n15_outliers"), os.path.join(args.work, "n15_plain")
    step("checkpoints", "outliers", ["tiny-checkpoint", "--full-size", "--outliers", "--out", outliers])
    image = os.path.join(args.work, "camera.png")
    if not os.path.isfile(image):
        import numpy as np
        from PIL import Image

        y, x = np.mgrid[0:480, 0:640]
        Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(image)
    check = ["quantize-check", "--image", image, "--instruction", "pick up the cube", "--device", "cuda"]
    check += ["--compile", "off", "--actions", "--seeds", "2"]

    def gates(name: str, checkpoint: str, extra: list[str]) -> dict | None:
        out = os.path.join(args.work, f"{name}.json")
        return step("gates", name, [*check, "--checkpoint", checkpoint, *extra, "--json", out], out, timeout=420)

    def bench(family: str, name: str, precision: str, extra=(), routes=None) -> None:
        out = os.path.join(args.work, f"bench_{family}_{name}.json")
        argv = ["bench", *BENCH.split(), "--family", f"gr00t_{family}", "--precision", precision, *extra]
        result = step(f"speed_{family}", name, [*argv, "--out", out], out, routes)
        if result is not None:
            entry = report[f"speed_{family}"][name]
            entry["figures"] = {key: result.get(key) for key in KEYS}
            base = report[f"speed_{family}"].get("fp16", {}).get("figures")
            if base:
                ratios = {key: (result.get(key), base.get(key)) for key in KEYS}
                entry["vs_fp16"] = {key: round(a / b, 3) for key, (a, b) in ratios.items() if a and b}
            save()

    keep = {}
    for precision in ("int8_weight", "fp8"):
        others = [arg for p in ("int8_weight", "fp8") if p != precision for arg in ("--precision", p)]
        result = gates(f"{precision}_auto_outliers", outliers, ["--precision", precision, *others, "--auto"])
        if result and "auto" in result:
            keep[precision] = result["auto"]["precision_keep_fp16"]
    bench("n1_5", "fp16", "fp16")
    for precision, names in keep.items():
        if names:
            bench("n1_5", f"{precision}_mixed", precision, ["--precision-keep-fp16", *names])
    bench("n1_5", "int8_weight", "int8_weight")
    bench("n1_5", "fp8", "fp8")
    for route in args.route:
        precision, extra, routes = ROUTES[route]
        bench("n1_5", route, precision, extra, routes)
    step("checkpoints", "plain", ["tiny-checkpoint", "--full-size", "--out", plain])
    gates("both_plain", plain, ["--precision", "int8_weight", "--precision", "fp8"])
    for precision in ("fp16", "int8_weight", "fp8"):
        bench("n1_7", precision, precision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
