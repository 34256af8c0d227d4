"""Does the GPU slow down under sustained batch-64 work? Times the graphed backbone call by call, first with a
pause before each call (a rested GPU), then back to back, while nvidia-smi samples the SM clock and the
power draw every 100 ms.

    python benchmarks/sustained_probe.py --batch 64 --calls 60 --out sustained.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

import torch

from groot_sage_ros.bench import frame_sets
from groot_sage_ros.config import n15_3b_config
from groot_sage_ros.engine import FeatureExtractor


def call_ms(call) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000.0


def smi_samples(text: str) -> list[tuple[float, float]]:
    """(SM clock MHz, power W) rows of ``nvidia-smi --format=csv,noheader,nounits``."""
    rows = []
    for line in text.strip().splitlines():
        try:
            clock, power = (float(field) for field in line.split(","))
        except ValueError:
            continue
        rows.append((clock, power))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    fx = FeatureExtractor.from_random(n15_3b_config(), device="cuda", dtype="float16")
    inputs = fx.prepare(frame_sets(args.batch, 1))
    for _ in range(5):
        fx.forward(inputs)
    report = {"batch": args.batch, "device": torch.cuda.get_device_name()}
    for name, pause in (("rested", 1.0), ("back_to_back", 0.0)):
        smi = subprocess.Popen(["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits",
                                "-lms", "100"], stdout=subprocess.PIPE, text=True)  # fmt: skip
        times = []
        for _ in range(args.calls if pause == 0 else args.calls // 4):
            time.sleep(pause)
            times.append(call_ms(lambda: fx.forward(inputs)))
        smi.terminate()
        samples = smi_samples(smi.communicate()[0])
        busy = [row for row in samples if row[1] > 200] or samples  # the samples taken while the GPU worked
        report[name] = {
            "ms_median": statistics.median(times), "ms_first": times[0], "ms_last": times[-1],
            "frames_per_s": args.batch * 1000.0 / statistics.median(times),
            "sm_clock_mhz_median_busy": statistics.median(row[0] for row in busy) if busy else None,
            "power_w_max": max(row[1] for row in samples) if samples else None,
            "sm_clock_mhz_min": min(row[0] for row in samples) if samples else None,
        }  # fmt: skip
        print(name, json.dumps(report[name]), flush=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
