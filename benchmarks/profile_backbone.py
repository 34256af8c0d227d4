"""Where the backbone's GPU time goes: the top CUDA kernels of one compiled call (graphs off, so the
profiler sees each kernel), at batch 1 and at a throughput batch, plus a throughput sweep of the fast path.

    python benchmarks/profile_backbone.py --batches 1 64 --sweep 16 32 64 128 --out profile.txt
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from groot_sage_ros.bench import frame_sets, throughput
from groot_sage_ros.config import RuntimeConfig, n15_3b_config
from groot_sage_ros.engine import FeatureExtractor


def kernel_table(call, rows: int) -> str:
    """The top CUDA kernels of one ``call()`` by total time (run it a few times first: warm-up)."""
    torch.cuda.synchronize()  # nothing queued before the call lands in its profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=90)


def save(lines: list[str], path: str) -> None:
    text = "\n".join(lines)
    print(text)
    with open(path, "w") as handle:
        handle.write(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--sweep", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    lines = []
    plain = FeatureExtractor.from_random(n15_3b_config(), device="cuda", dtype="float16",
                                         runtime=RuntimeConfig(compile="on", cuda_graphs=False))  # fmt: skip
    for batch in args.batches:
        inputs = plain.prepare(frame_sets(batch, 1))
        for _ in range(3):
            plain.forward(inputs)
        lines.append(f"== batch {batch}, compiled, no graphs ==")
        lines.append(kernel_table(lambda: plain.forward(inputs), rows=25))
    del plain
    fast = FeatureExtractor.from_random(n15_3b_config(), device="cuda", dtype="float16")
    for batch in args.sweep:
        fps = throughput(fast, batch, 1, iters=10, warmup=3, compare_eager=False)["throughput_fps"]
        lines.append(f"fast path batch {batch}: {batch * 1000 / fps:.2f} ms, {fps:.1f} frames/s")
    save(lines, args.out)


if __name__ == "__main__":
    main()
