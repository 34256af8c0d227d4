"""The kernels of a batch-64 backbone call, in isolation: attention under each SDPA backend, SigLIP's layer
norms as inductor and ATen write them, and the layers' GEMMs through cuBLAS and cuBLASLt (the shapes of one
224x224 camera and a 295-token prompt); with ``--model``, the compiled model's frames/s under each BLAS
library. Times are CUDA-event medians over 50 calls after warm-up.

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


# (name, tokens per frame, in, out) of every GEMM of a backbone layer, fused as the fast path runs them
GEMMS = [("siglip_qkv", 256, 1152, 3456), ("siglip_out", 256, 1152, 1152), ("siglip_fc1", 256, 1152, 4304),
         ("siglip_fc2", 256, 4304, 1152), ("qwen3_qkv", 295, 2048, 4096), ("qwen3_o", 295, 2048, 2048),
         ("qwen3_gate_up", 295, 2048, 12288), ("qwen3_down", 295, 6144, 2048)]  # fmt: skip


def gemm_tflops(batch: int) -> dict:
    """TFLOP/s of each layer GEMM at ``batch`` frames, under cuBLAS and cuBLASLt."""
    results = {}
    for library in ("cublas", "cublaslt"):
        torch.backends.cuda.preferred_blas_library(library)
        for name, tokens, k, n in GEMMS:
            x = torch.randn(batch * tokens, k, device="cuda", dtype=torch.float16)  # (M, K)
            w = torch.randn(n, k, device="cuda", dtype=torch.float16)  # (N, K), as nn.Linear stores it
            ms = median_ms(lambda: F.linear(x, w))
            results[f"{name}_{library}_tflops"] = 2 * x.shape[0] * k * n / ms / 1e9
    torch.backends.cuda.preferred_blas_library("cublas")
    return results


def model_fps(batch: int) -> dict:
    """Frames/s of the compiled model without graphs (they would keep the kernels of their capture)."""
    from groot_sage_ros.bench import frame_sets
    from groot_sage_ros.config import RuntimeConfig, n15_3b_config
    from groot_sage_ros.engine import FeatureExtractor

    extractor = FeatureExtractor.from_random(n15_3b_config(), device="cuda", dtype="float16",
                                             runtime=RuntimeConfig(compile="on", cuda_graphs=False))  # fmt: skip
    inputs = extractor.prepare(frame_sets(batch, 1))
    results = {}
    for library in ("cublas", "cublaslt", "cublas"):
        torch.backends.cuda.preferred_blas_library(library)
        ms = median_ms(lambda: extractor.forward(inputs), iters=20, warmup=3)
        results.setdefault(f"model_{library}_fps", []).append(batch * 1000 / ms)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", action="store_true", help="also the compiled model's frames/s per BLAS library")
    args = parser.parse_args()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch}
    report.update(attention_times(args.batch))
    report.update(layer_norm_times(args.batch))
    report.update(gemm_tflops(args.batch))
    if args.model:
        report.update(model_fps(args.batch))
    text = json.dumps(report, indent=2)
    print(text)
    with open(args.out, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
