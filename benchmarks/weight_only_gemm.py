"""The weight-only GEMM against cuBLAS, call by call, on the GPU: the Linear calls one frame set makes.

The shapes are recorded from a full-size random model (``random_engine``, eager, no graphs) at batch 1, the
rows also times ``--batch-rows`` for the throughput regime. Each call is timed in a CUDA graph
(``triton.testing.do_bench_cudagraph``) as: fp16 cuBLAS; the old int8 path (dequantise, then cuBLAS); the
Triton kernel with int8 and with fp8 weights; fp8 activations and weights on ``torch._scaled_mm`` (with the
activations' quantisation, eager, and the GEMM alone); the dequantisation compiled as the engine runs it; the
kernel with fp16 weights (what Triton itself reaches with this kernel, no widening). Also
checks the kernel against the dequantised weight's product (largest relative error).

    python benchmarks/weight_only_gemm.py --out benchmarks/weight_only_gemm_h100.json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections import Counter


def record_calls(family: str) -> Counter:
    """(rows, out, in) -> how many calls one batch-1 frame set (with the head) makes."""
    import numpy as np
    import torch

    from groot_sage_ros.engine import RuntimeConfig, random_engine

    runtime = RuntimeConfig(compile="off", cuda_graphs=True, precision="int8_weight")
    engine = random_engine(family, action_head=True, runtime=runtime)
    engine.graphed = False  # the fast path's fused modules, called once each (no graph warm-up calls)
    from groot_sage_ros.fastpath.precision import Int8WeightLinear

    calls: Counter = Counter()

    def hook(module, args):
        x = args[0]
        calls[(x.numel() // x.shape[-1], module.weight.shape[0], module.weight.shape[1])] += 1

    fast = [m for m in engine.model.fast.modules() if isinstance(m, Int8WeightLinear)]
    handles = [m.register_forward_pre_hook(hook) for m in fast]
    result = engine.extract([np.full((480, 640, 3), 127, dtype=np.uint8)], "pick up the cube")
    engine.predict_actions(result, torch.zeros(1, engine.state_width), 0, seed=0)
    for handle in handles:
        handle.remove()
    del engine
    torch.cuda.empty_cache()
    return calls


def wide_tiles() -> tuple:
    """A wider tuning space than the kernel's own, to find the tiles worth keeping in ``TILES``."""
    plain = [
        (bn, bm, bk, 1, warps, stages)
        for bn in (64, 128, 256)
        for bm in (32, 64, 128)
        for bk in (64, 128)
        for warps, stages in ((4, 4), (8, 3))
        if not (bn == 256 and warps == 4)
    ] + [(64, 16, 128, 1, 4, 4), (128, 16, 128, 1, 4, 4)]
    split = [(bn, bm, 128, s, 4, 4) for bn in (64, 128) for bm in (16, 32, 64) for s in (2, 4, 8)]
    return tuple(plain + split)


def chosen(tiles, split: int, rows: int, n: int, k: int):
    """The autotuner's pick for this call, as a tile tuple."""
    from groot_sage_ros.fastpath.weight_only_gemm import triton_kernel

    kernel = triton_kernel(tiles).kernels[split]
    for key, config in kernel.cache.items():
        if tuple(key[:3]) == (1 << (rows - 1).bit_length(), n, k):
            kw = config.kwargs
            return [kw["BLOCK_N"], kw["BLOCK_M"], kw["BLOCK_K"], kw["SPLIT_K"], config.num_warps, config.num_stages]
    return None


def time_shape(rows: int, out_features: int, in_features: int, wide: bool) -> dict:
    import torch
    import torch.nn.functional as F
    from triton.testing import do_bench_cudagraph

    from groot_sage_ros.fastpath.precision import E4M3_MAX
    from groot_sage_ros.fastpath.weight_only_gemm import dequantize, kernel_linear

    torch.manual_seed(0)
    x = torch.randn(rows, in_features, device="cuda", dtype=torch.float16)
    w = torch.randn(out_features, in_features, device="cuda", dtype=torch.float16) / in_features**0.5
    scale8 = (w.abs().amax(1).float() / 127).clamp(min=1e-12)
    w8 = torch.round(w.float() / scale8[:, None]).clamp(-127, 127).to(torch.int8)
    scale8 = scale8.half()
    ones = torch.ones(out_features, device="cuda", dtype=torch.float16)
    scalef = (w.abs().amax(1).float() / E4M3_MAX).clamp(min=1e-12)
    wf = (w.float() / scalef[:, None]).to(torch.float8_e4m3fn)

    def scaled_mm():
        x_scale = (x.abs().amax(-1, keepdim=True).float() / E4M3_MAX).clamp(min=1e-12)
        xq = (x.float() / x_scale).to(torch.float8_e4m3fn)
        return torch._scaled_mm(
            xq, wf.t(), scale_a=x_scale, scale_b=scalef[None], out_dtype=torch.bfloat16, use_fast_accum=True
        )

    x_scale = (x.abs().amax(-1, keepdim=True).float() / E4M3_MAX).clamp(min=1e-12)
    xq = (x.float() / x_scale).to(torch.float8_e4m3fn)

    def scaled_mm_gemm_only():  # the activations quantised beforehand: the FP8 GEMM alone
        return torch._scaled_mm(
            xq, wf.t(), scale_a=x_scale, scale_b=scalef[None], out_dtype=torch.bfloat16, use_fast_accum=True
        )

    # int8_weight's route without the kernel, as the engine runs it: traced, the dequantisation one fused kernel
    dequantise_compiled = torch.compile(lambda: F.linear(x, w8.to(x.dtype) * scale8[:, None]), fullgraph=True)
    timings = {
        "fp16_cublas": lambda: F.linear(x, w),
        "int8_dequantise_cublas": lambda: F.linear(x, w8.to(x.dtype) * scale8[:, None]),
        "int8_dequantise_compiled": dequantise_compiled,
        "fp8_scaled_mm_gemm_only": scaled_mm_gemm_only,
        "int8_kernel": lambda: kernel_linear(x, w8, scale8, None),
        "fp16_weight_kernel": lambda: kernel_linear(x, w, ones, None),  # Triton's own ceiling on this kernel
        "fp8_weight_kernel": lambda: kernel_linear(x, wf, scalef, None),
        "fp8_scaled_mm": scaled_mm,
    }
    if wide:
        tiles = wide_tiles()
        for split in (1, 2, 4, 8):
            timings[f"int8_wide_split{split}"] = functools.partial(kernel_linear, x, w8, scale8, None, split, tiles)
            timings[f"fp8_wide_split{split}"] = functools.partial(kernel_linear, x, wf, scalef, None, split, tiles)
    result = {}
    for name, fn in timings.items():
        fn()  # autotuning, outside the graph
        torch.cuda.synchronize()
        result[f"{name}_us"] = do_bench_cudagraph(fn, rep=50) * 1e3
    if wide:
        for split in (1, 2, 4, 8):
            result[f"wide_split{split}_pick"] = chosen(wide_tiles(), split, rows, out_features, in_features)
    for name, weight, scale in (("int8", w8, scale8), ("fp8", wf, scalef)):
        expected = F.linear(x.float(), dequantize(weight, scale, torch.float32))
        got = kernel_linear(x, weight, scale, None).float()
        result[f"{name}_kernel_rel_error"] = float((got - expected).norm() / expected.norm())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="gr00t_n1_5")
    parser.add_argument(
        "--batch-rows", type=int, default=64, help="also time each call at this many times the rows (0: no)"
    )
    parser.add_argument("--wide", action="store_true", help="also tune over a wider tile space (batch-1 rows only)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    import torch

    calls = record_calls(args.family)
    shapes = {}
    for (rows, n, k), count in sorted(calls.items()):
        for factor in (1, args.batch_rows) if args.batch_rows else (1,):
            entry = shapes.setdefault(f"{rows * factor}x{n}x{k}", {"calls_per_frame_set": count, "factor": factor})
            entry.update(time_shape(rows * factor, n, k, args.wide and factor == 1))
            print(f"{rows * factor}x{n}x{k}", entry, file=sys.stderr, flush=True)
    totals = {}
    for factor in (1, args.batch_rows) if args.batch_rows else (1,):
        entries = [e for e in shapes.values() if e["factor"] == factor]
        for name in [key[:-3] for key in entries[0] if key.endswith("_us")]:
            totals[f"{name}_us_per_frame_set_x{factor}"] = sum(
                e[f"{name}_us"] * e["calls_per_frame_set"] for e in entries
            )
        for kind in ("int8", "fp8") if args.wide and factor == 1 else ():  # the best split per call
            totals[f"{kind}_wide_best_us_per_frame_set_x1"] = sum(
                min(e[f"{kind}_wide_split{s}_us"] for s in (1, 2, 4, 8)) * e["calls_per_frame_set"] for e in entries
            )
    report = {
        "gpu": torch.cuda.get_device_name(0),
        "family": args.family,
        "totals": totals,
        "shapes": shapes,
        "command": "python benchmarks/weight_only_gemm.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(totals, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
