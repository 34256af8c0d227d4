"""Does the GPU slow down under sustained batch-64 work? Times the graphed backbone call by call, first with a
pause before each call (a rested GPU), then back to back, while nvidia-smi samples the SM clock and the
power draw every 100 ms. Then the same for the backbone's layer GEMMs alone (every SigLIP and Qwen3
layer's GEMMs, fused as the fast path runs them, 295 tokens a prompt: no padding), replayed as one CUDA
graph: a bound for any fp16 path that keeps cuBLAS's GEMMs, whatever else it fuses.

    python benchmarks/archive/sustained_probe.py --batch 64 --calls 60 --out sustained.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

import torch

from groot_sage_ros.bench import frame_sets
from groot_sage_ros.engine import random_engine
from groot_sage_ros.families import DEFAULT_FAMILY


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


def model_call(batch: int):
    """The graphed backbone call on ``batch`` frame sets (full-size random weights)."""
    engine = random_engine(DEFAULT_FAMILY, device="cuda", dtype="float16")
    inputs = engine.prepare(frame_sets(batch, 1))
    return lambda: engine.forward(inputs)


def layer_gemms(batch: int, vision_layers: int = 27, llm_layers: int = 12):
    """A CUDA graph of one batch's layer GEMMs (kernel_probe.GEMMS, each layer with its own weights)."""
    from kernel_probe import GEMMS

    inputs = {}
    steps = []
    for name, tokens, k, n in GEMMS:
        x = inputs.setdefault((tokens, k), torch.randn(batch * tokens, k, device="cuda", dtype=torch.float16))
        layers = vision_layers if name.startswith("siglip") else llm_layers
        steps += [(x, torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02) for _ in range(layers)]
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # warm-up off the default stream, as graph capture wants
        outs = [torch.nn.functional.linear(x, w) for x, w in steps]
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = [torch.nn.functional.linear(x, w) for x, w in steps]
    return graph.replay, outs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report = {"batch": args.batch, "device": torch.cuda.get_device_name()}
    measure(model_call(args.batch), "", args, report)
    torch.cuda.empty_cache()  # the model is gone: room for the GEMMs' own weights
    replay, _outputs = layer_gemms(args.batch)
    measure(replay, "gemms_only_", args, report)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)


def measure(call, prefix: str, args, report: dict) -> None:
    """``{prefix}rested`` and ``{prefix}back_to_back`` entries of ``report`` for ``call``."""
    for _ in range(5):
        call()
    for name, pause in ((prefix + "rested", 1.0), (prefix + "back_to_back", 0.0)):
        smi = subprocess.Popen(["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits",
                                "-lms", "100"], stdout=subprocess.PIPE, text=True)
        times = []
        for _ in range(args.calls if pause == 0 else args.calls // 4):
            time.sleep(pause)
            times.append(call_ms(call))
        smi.terminate()
        samples = smi_samples(smi.communicate()[0])
        busy = [row for row in samples if row[1] > 200] or samples  # the samples taken while the GPU worked
        report[name] = {
            "ms_median": statistics.median(times), "ms_first": times[0], "ms_last": times[-1],
            "frames_per_s": args.batch * 1000.0 / statistics.median(times),
            "sm_clock_mhz_median_busy": statistics.median(row[0] for row in busy) if busy else None,
            "power_w_max": max(row[1] for row in samples) if samples else None,
            "sm_clock_mhz_min": min(row[0] for row in samples) if samples else None,
        }
        print(name, json.dumps(report[name]), flush=True)


if __name__ == "__main__":
    main()
