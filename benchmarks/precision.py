"""Every precision and route on one GPU, then the accuracy gates on a checkpoint with outlier channels.

Speed and memory: ``groot-sage bench`` (batch 1 with the head, back-to-back calls at batch 64) on random
weights in the released shapes, in a fresh process per precision and route: fp16; int8_weight dequantising
in traced code (the default) and through the weight-only Triton kernel; fp8 with its defaults, with
``--fp8-min-rows 0`` (the FP8 GEMM for every call) and with the small calls dequantised in traced code. A route
is chosen by setting ``weight_only_gemm.KERNEL_MAX_ROWS`` in that process. Then ``groot-sage quantize-check``
for int8_weight and fp8 on a full-size checkpoint with outlier channels, and ``--auto`` for each (the
mixed precision that passes). Each step writes into the JSON as it ends; steps past ``--limit-s`` are
skipped, so a cut-off run still reports what it measured. Random weights are a proxy: run quantize-check
on your own weights.

    python benchmarks/precision.py --out benchmarks/precision_h100.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

BENCH = "--full-size-random --batch 1 --actions --iters 40 --warmup 5 --throughput-batch 64 --throughput-calls 10"
# (name, precision, extra bench arguments, {weight dtype: KERNEL_MAX_ROWS} or None for the defaults)
ROUTES = [
    ("fp16", "fp16", [], None),
    ("int8_weight", "int8_weight", [], None),
    ("int8_weight_kernel", "int8_weight", [], {"torch.int8": 2048}),
    ("fp8", "fp8", [], None),
    ("fp8_scaled_mm_every_call", "fp8", ["--fp8-min-rows", "0"], None),
    ("fp8_small_calls_dequantised", "fp8", [], {"torch.float8_e4m3fn": 0}),
]
KEYS = ("backbone_ms_median", "action_head_ms_median", "full_ms_median", "throughput_fps", "peak_allocated_gb")
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
    parser.add_argument("--skip-gates", action="store_true", help="speed and memory only")
    parser.add_argument("--out", required=True, help="the JSON, rewritten after each step")
    args = parser.parse_args()
    start, work = time.time(), tempfile.mkdtemp(prefix="precision_")
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    report = {"gpu": gpu.stdout.strip(), "command": "python benchmarks/precision.py " + " ".join(sys.argv[1:])}

    def save() -> None:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)

    def step(section: str, name: str, argv: list[str], result=None, routes=None, timeout: float = 240) -> dict | None:
        """Run ``groot-sage argv`` in a fresh process; the JSON it wrote to ``result``, or None."""
        left = args.limit_s - (time.time() - start)
        entry = report.setdefault(section, {})[name] = {"argv": argv, "kernel_max_rows": routes}
        if left < 30:
            entry["skipped"] = "out of time"
            save()
            return None
        tick = time.time()
        done = subprocess.run(
            [sys.executable, "-c", CLI.format(routes=routes or {}), *argv],
            capture_output=True,
            text=True,
            timeout=min(timeout, left),
        )
        entry.update(rc=done.returncode, seconds=round(time.time() - tick, 1))
        if done.returncode not in (0, 1):
            entry["stderr_tail"] = done.stderr[-1500:]
        save()
        return json.load(open(result)) if result and os.path.isfile(result) else None

    for name, precision, extra, routes in ROUTES:
        out = os.path.join(work, f"{name}.json")
        argv = ["bench", *BENCH.split(), "--precision", precision, *extra, "--out", out]
        result = step("speed", name, argv, out, routes)
        if result is not None:
            report["speed"][name]["figures"] = {key: result[key] for key in KEYS}
            base = report["speed"].get("fp16", {}).get("figures")
            if base:
                report["speed"][name]["vs_fp16"] = {key: round(result[key] / base[key], 3) for key in KEYS}
            save()
    if args.skip_gates:
        return 0
    checkpoint, image = os.path.join(work, "outliers"), os.path.join(work, "camera.png")
    step("gates", "make_checkpoint", ["tiny-checkpoint", "--full-size", "--outliers", "--out", checkpoint])
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:480, 0:640]
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(image)
    check = ["quantize-check", "--checkpoint", checkpoint, "--image", image, "--instruction", "pick up the cube"]
    check += ["--device", "cuda", "--compile", "off", "--actions", "--seeds", "2"]
    for name, extra in [
        ("int8_weight_and_fp8", ["--precision", "int8_weight", "--precision", "fp8"]),
        ("int8_weight_auto", ["--precision", "int8_weight", "--auto"]),
        ("fp8_auto", ["--precision", "fp8", "--auto"]),
    ]:
        out = os.path.join(work, f"{name}.json")
        result = step("gates", name, [*check, *extra, "--json", out], out)
        if result is not None:
            report["gates"][name]["report"] = result
            save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
