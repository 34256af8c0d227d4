"""Candidate kernels for int8 weights and fp8 at GR00T N1.5's layer shapes, before choosing (issue 18).

For each Linear shape of the backbone (K -> N, and how many layers have it) and for the rows of a batch-1
call (295 LLM tokens, 256 per image) and a batch-64 call, the median time of: fp16 ``F.linear``; int8
weights dequantised in the call (compiled, so the cast may fuse); ``torch._weight_int8pack_mm``; fp8 e4m3
with per-token activation scales and per-channel weight scales through ``torch._scaled_mm`` (compiled, the
activation quantisation included). Prints JSON; ``--out`` writes it.
"""

import argparse
import json

import torch
import torch.nn.functional as F

# (name, K, N, layers): SigLIP (27 layers) and Qwen3 (12 layers) Linear shapes, q/k/v and gate/up fused
SHAPES = [("siglip_qkv", 1152, 3456, 27), ("siglip_out", 1152, 1152, 27), ("siglip_fc1", 1152, 4304, 27),
          ("siglip_fc2", 4304, 1152, 27), ("qwen_qkv", 2048, 4096, 12), ("qwen_o", 2048, 2048, 12),
          ("qwen_gate_up", 2048, 12288, 12), ("qwen_down", 6144, 2048, 12)]
E4M3_MAX = 448.0


def timed(fn, iters=50):
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def dequant_linear(x, w, s):
    return F.linear(x, w.to(x.dtype)) * s


def fp8_linear(x, w8, sw):
    amax = x.abs().amax(-1, keepdim=True).float().clamp(min=1e-12)
    sx = amax / E4M3_MAX
    xq = (x.float() / sx).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return torch._scaled_mm(xq, w8.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16).to(x.dtype)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[256, 295, 16384, 18880])
    parser.add_argument("--out")
    args = parser.parse_args()
    dq, f8 = torch.compile(dequant_linear, dynamic=False), torch.compile(fp8_linear, dynamic=False)
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "shapes": {}}
    for name, k, n, layers in SHAPES:
        w = torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02
        s = (w.abs().amax(1) / 127).float()
        wq = (w.float() / s[:, None]).round().clamp(-127, 127).to(torch.int8)
        sw = (w.abs().amax(1).float() / E4M3_MAX).clamp(min=1e-12)
        w8 = (w.float() / sw[:, None]).to(torch.float8_e4m3fn)
        for rows in args.rows:
            x = torch.randn(rows, k, device="cuda", dtype=torch.float16)
            ref = F.linear(x, w)
            entry = {"layers": layers, "fp16_ms": timed(lambda: F.linear(x, w))}
            entry["int8_dequant_ms"] = timed(lambda: dq(x, wq, s.half()))
            try:
                entry["int8pack_ms"] = timed(lambda: torch._weight_int8pack_mm(x, wq, s.half()))
            except Exception as err:  # noqa: BLE001 -- a probe: record why a candidate is out
                entry["int8pack_error"] = str(err)[:200]
            entry["fp8_ms"] = timed(lambda: f8(x, w8, sw[None, :]))
            entry["fp8_rel_err"] = ((f8(x, w8, sw[None, :]).float() - ref.float()).norm() / ref.float().norm()).item()
            entry["int8_rel_err"] = ((dq(x, wq, s.half()).float() - ref.float()).norm() / ref.float().norm()).item()
            report["shapes"][f"{name}@{rows}"] = entry
    totals = {}
    for key, entry in report["shapes"].items():
        rows = key.split("@")[1]
        for kernel in ("fp16_ms", "int8_dequant_ms", "int8pack_ms", "fp8_ms"):
            if kernel in entry:
                totals.setdefault(rows, {}).setdefault(kernel, 0.0)
                totals[rows][kernel] += entry[kernel] * entry["layers"]
    report["backbone_linear_total_ms"] = totals
    print(json.dumps(report["backbone_linear_total_ms"], indent=1))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
