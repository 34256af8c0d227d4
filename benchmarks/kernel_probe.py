"""The non-GEMM kernels of a batch-64 backbone call, in isolation: attention under each SDPA backend and
SigLIP's layer norms as inductor and ATen write them (the shapes of one 224x224 camera and a 295-token
prompt). Times are CUDA-event medians over 50 calls after warm-up.

    python benchmarks/kernel_probe.py --batch 64 --out kernel_probe.json
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}  # fmt: skip


def median_ms(call, iters: int = 50, warmup: int = 5) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def attention_times(batch: int) -> dict:
    """SigLIP (no mask, head dim 72) and Qwen3 (causal, GQA 16/8, head dim 128) attention per backend."""
    half = dict(device="cuda", dtype=torch.float16)
    vision = [torch.randn(batch, 16, 256, 72, **half) for _ in range(3)]  # (N, H, T, d)
    llm_q = torch.randn(batch, 16, 295, 128, **half)  # (B, Hq, L, d)
    llm_kv = [torch.randn(batch, 8, 295, 128, **half) for _ in range(2)]  # (B, Hkv, L, d)
    results = {}
    for name, backend in BACKENDS.items():
        with sdpa_kernel([backend]):
            for label, call in (
                ("vision", lambda: F.scaled_dot_product_attention(*vision)),
                ("llm", lambda: F.scaled_dot_product_attention(llm_q, *llm_kv, is_causal=True, enable_gqa=True)),
                ("llm_kv_repeated", lambda: F.scaled_dot_product_attention(
                    llm_q, *(t.repeat_interleave(2, dim=1) for t in llm_kv), is_causal=True)),
            ):
                try:
                    results[f"{label}_{name}_ms"] = median_ms(call)
                except RuntimeError as err:
                    results[f"{label}_{name}_ms"] = f"unsupported: {str(err).splitlines()[0][:120]}"
    return results


def layer_norm_times(batch: int) -> dict:
    """SigLIP's pre-attention layer norm and residual add + layer norm: ATen eager against inductor."""
    half = dict(device="cuda", dtype=torch.float16)
    x, residual = torch.randn(batch * 256, 1152, **half), torch.randn(batch * 256, 1152, **half)  # (N T, D)
    weight, bias = torch.randn(1152, **half), torch.randn(1152, **half)

    def norm(t):
        return F.layer_norm(t, (1152,), weight, bias, 1e-6)

    def add_norm(t, r):
        h = t + r
        return h, norm(h)

    results = {"bytes_norm_mb": 2 * x.numel() * 2 / 1e6}
    results["norm_eager_ms"] = median_ms(lambda: norm(x))
    results["add_norm_eager_ms"] = median_ms(lambda: add_norm(x, residual))
    results["add_eager_ms"] = median_ms(lambda: x + residual)
    for tuned in (False, True):
        torch._inductor.config.coordinate_descent_tuning = tuned
        torch._dynamo.reset()
        suffix = "_inductor_coordinate_descent_ms" if tuned else "_inductor_ms"
        compiled_norm, compiled_add_norm = torch.compile(norm), torch.compile(add_norm)
        results["norm" + suffix] = median_ms(lambda: compiled_norm(x))
        results["add_norm" + suffix] = median_ms(lambda: compiled_add_norm(x, residual))
    torch._inductor.config.coordinate_descent_tuning = False
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch}
    report.update(attention_times(args.batch))
    report.update(layer_norm_times(args.batch))
    text = json.dumps(report, indent=2)
    print(text)
    with open(args.out, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
