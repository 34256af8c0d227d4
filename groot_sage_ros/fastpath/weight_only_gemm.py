"""``weight_only_linear``: y = x @ (W * scale)^T + b with W stored in 8 bits (int8 or fp8 e4m3), read once.

The quantised weight goes from memory to the tensor cores in 8 bits and is widened to the activations' dtype
in registers; the per-output-channel scale and the bias are applied to the fp32 accumulator. At the few
hundred rows a frame set has, the GEMMs are bound by reading the weights, so half the bytes is up to half
the time (a separate dequantisation kernel reads 1 byte and writes 2 before the GEMM reads 2 again: 5 bytes
a weight instead of 1). The product is the dequantised weight's arithmetic, exactly the products, in fp32.

The Triton kernel computes the transposed product, out^T (N, M) = W (N, K) @ x^T (K, M): the widened weight
is the MMA's first operand, which Hopper's wgmma takes from registers, and the few rows of x are its narrow
second operand (16 rows and up), the layout weight-only kernels use for small batches.

It is a PyTorch custom op (``groot_sage_ros::weight_only_linear``): ``torch.compile`` keeps it as one call,
CUDA graphs capture it. ``linear`` chooses per call: the kernel for calls of at most ``KERNEL_MAX_ROWS`` rows
(by weight dtype), else the weight dequantised in traced code and cuBLAS. Off CUDA, or without Triton, the
op is the reference arithmetic. Both precisions send the action head's calls (at most 64 rows at batch 1) through
the kernel, where it beats dequantising; the backbone's calls (a few hundred rows) dequantise: there the
kernel loses to cuBLAS's fp16 GEMM, as Triton's own fp16 GEMM of this form does (docs/jetson.md).
"""

from __future__ import annotations

import functools
import inspect
import os

import torch
import torch.nn.functional as F

# Which calls take the Triton kernel, by weight dtype: those of at most this many rows; the others dequantise
# in traced code (one fused kernel under torch.compile) and multiply with cuBLAS. Measured on the H100
# (benchmarks/weight_only_gemm_h100.json, precision_auto_h100.json): see docs/jetson.md.
KERNEL_MAX_ROWS = {torch.int8: 64, torch.float8_e4m3fn: 2**31 - 1}  # fp8: every call under fp8_min_rows
# The int8 -> fp16 PTX conversion (below) serves calls of at most this many rows (tiles of at most 64 rows, 4
# warps), where the GPU benchmark found it exact at every shape; in wider calls Triton 3.6 gave wrong products
# at 2 of 12 shapes on the H100, so those widen by a cast.
PTX_MAX_ROWS = 64


def dequantize(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, K) in ``dtype``: the 8-bit weight times its per-output-channel scale (N,)."""
    return (weight.to(torch.float32) * scale.reshape(-1, 1).to(torch.float32)).to(dtype)


def reference_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
    """The arithmetic the kernel computes, in plain PyTorch: (..., K) -> (..., N)."""
    return F.linear(x, dequantize(weight, scale, x.dtype), bias)


# int8 -> fp16 in registers, 4 weights at a time, exactly (the magic-number conversion weight-only kernels use,
# FasterTransformer's): byte b XOR 0x80 is b + 128 as an unsigned byte u; the fp16 whose high byte is 0x64
# and low byte u is 1024 + u; minus 1152 (0x6480) that is b. Two byte permutes and two packed subtractions
# instead of four int-to-float conversions, which run at a quarter of the rate and starved the tensor cores.
SIGN_FLIP = 0x80808080  # b XOR 0x80 on each of the 4 bytes
HIGH_BYTE_1024 = 0x64646464  # the source of each fp16's high byte: 0x64xx is 1024 + xx
LOW_PAIR, HIGH_PAIR = 0x4140, 0x4342  # prmt selectors: bytes (0, 1) and (2, 3) each under a 0x64
MINUS_1152 = 0x64806480  # 1152 in both halves of an f16x2
INT8_TO_FP16_PTX = f"""{{
.reg .b32 u, c;
xor.b32 u, $2, {SIGN_FLIP:#x};
prmt.b32 $0, u, {HIGH_BYTE_1024:#x}, {LOW_PAIR:#x};
prmt.b32 $1, u, {HIGH_BYTE_1024:#x}, {HIGH_PAIR:#x};
mov.b32 c, {MINUS_1152:#x};
sub.f16x2 $0, $0, c;
sub.f16x2 $1, $1, c;
}}"""


# (BLOCK_N weight rows, BLOCK_M activation rows, BLOCK_K, SPLIT_K, warps, stages): the tuning space. SPLIT_K > 1
# cuts K among programs that add into an fp32 output (few rows and few output tiles: the DiT's 49-row calls).
TILES = [
    (64, 16, 128, 1, 4, 4),
    (128, 16, 128, 1, 4, 4),
    (64, 32, 128, 1, 4, 4),
    (128, 32, 128, 1, 4, 4),
    (128, 64, 64, 1, 4, 4),
    (128, 64, 128, 1, 4, 3),
    (128, 128, 64, 1, 8, 3),
    (256, 128, 64, 1, 8, 3),
    (64, 64, 128, 2, 4, 4),
    (64, 64, 128, 4, 4, 4),
    (128, 64, 128, 4, 4, 4),
]


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter: no inline PTX, a plain cast


def ptx_widens(weight_dtype: torch.dtype, dtype: torch.dtype, rows: int) -> bool:
    """Whether the kernel widens the weights with ``INT8_TO_FP16_PTX``: int8 into fp16, compiled for a GPU, in
    a call of at most ``PTX_MAX_ROWS`` rows."""
    return weight_dtype == torch.int8 and dtype == torch.float16 and rows <= PTX_MAX_ROWS and not INTERPRETED


@functools.cache
def triton_kernel(tiles: tuple = tuple(TILES)):
    """The Triton kernel's launcher, or None where Triton is not installed (built on first use: importing
    Triton is slow). ``tiles``: the tuning space (``TILES``; the benchmark passes a wider one)."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    def config(bn, bm, bk, split, warps, stages):
        tile = {"BLOCK_N": bn, "BLOCK_M": bm, "BLOCK_K": bk, "SPLIT_K": split}
        return triton.Config(tile, num_warps=warps, num_stages=stages)

    configs = {split: [config(*t) for t in tiles if t[3] == split] for split in {t[3] for t in tiles}}

    def fits_rows(configs, named_args, **kwargs):
        """Configs whose row tile is no wider than the call's rows need (at least the smallest tile)."""
        rows = named_args["M_BUCKET"]
        kept = [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, rows)]
        return kept or configs[:1]

    @triton.jit
    def weight_only_mm(
        x_ptr,  # (M, K) activations, fp16 / bf16 / fp32
        w_ptr,  # (N, K) int8 or float8_e4m3fn
        s_ptr,  # (N,) per-output-channel scale
        b_ptr,  # (N,) bias, or a dummy when HAS_BIAS is false
        o_ptr,  # (M, N) output: the activations' dtype, or fp32 zeros to add into when SPLIT_K > 1
        M,
        N,
        K,
        M_BUCKET,  # M rounded up to a power of two: the autotuning key
        stride_xm,
        stride_wn,
        stride_om,
        HAS_BIAS: tl.constexpr,
        WIDEN_BY_PTX: tl.constexpr,  # int8 weights, fp16 activations, on a GPU: widened by WIDEN_PTX, else cast
        WIDEN_PTX: tl.constexpr,  # INT8_TO_FP16_PTX
        EVEN_K: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_K: tl.constexpr,
        SPLIT_K: tl.constexpr,
    ):
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
        offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
        part = tl.program_id(2)  # which share of K (SPLIT_K > 1)
        offs_k = part * BLOCK_K + tl.arange(0, BLOCK_K)  # (BK,)
        w_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :]  # (BN, BK)
        x_ptrs = x_ptr + offs_m[None, :] * stride_xm + offs_k[:, None]  # (BK, BM): x^T's tile
        n_in, m_in = offs_n[:, None] < N, offs_m[None, :] < M
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K * SPLIT_K)):
            if EVEN_K:
                w = tl.load(w_ptrs, mask=n_in, other=0.0)
                x = tl.load(x_ptrs, mask=m_in, other=0.0)
            else:
                k_in = offs_k < K - k * BLOCK_K * SPLIT_K
                w = tl.load(w_ptrs, mask=n_in & k_in[None, :], other=0.0)
                x = tl.load(x_ptrs, mask=m_in & k_in[:, None], other=0.0)
            if WIDEN_BY_PTX:
                w = tl.inline_asm_elementwise(WIDEN_PTX, "=r,=r,r", [w], dtype=tl.float16, is_pure=True, pack=4)
            acc = tl.dot(w.to(x.dtype), x, acc)  # (BN, BM) += (BN, BK) @ (BK, BM), fp32
            w_ptrs += BLOCK_K * SPLIT_K
            x_ptrs += BLOCK_K * SPLIT_K
        scale = tl.load(s_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)  # (BN,)
        acc = acc * scale[:, None]
        if HAS_BIAS:
            if part == 0:
                acc += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[:, None]
        o_ptrs = o_ptr + offs_m[None, :] * stride_om + offs_n[:, None]  # (BN, BM): out^T's tile
        if SPLIT_K == 1:
            tl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty), mask=n_in & m_in)
        else:
            tl.atomic_add(o_ptrs, acc, mask=n_in & m_in)

    even_k = triton.heuristics({"EVEN_K": lambda args: args["K"] % (args["BLOCK_K"] * args["SPLIT_K"]) == 0})
    kernels = {}
    for split, split_configs in configs.items():
        if INTERPRETED:  # the CPU interpreter has no benchmarker: one config
            kernels[split] = (even_k(weight_only_mm), dict(split_configs[0].kwargs))
            continue
        tuning = {"prune_configs_by": {"early_config_prune": fits_rows}, "warmup": 5, "rep": 20}
        if split > 1:
            tuning["reset_to_zero"] = ["o_ptr"]  # each timing adds into a zeroed output
        if "cache_results" in inspect.signature(triton.autotune).parameters:
            tuning["cache_results"] = True  # the choices on disk, beside the kernels: a warm start skips tuning
        tuned = triton.autotune(configs=split_configs, key=["M_BUCKET", "N", "K"], **tuning)(even_k(weight_only_mm))
        kernels[split] = (tuned, {})

    def launch(
        x2: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, split: int = 1
    ) -> torch.Tensor:
        rows, inner = x2.shape
        out_features = weight.shape[0]
        kernel, fixed = kernels[split]
        if split == 1:
            out = torch.empty(rows, out_features, dtype=x2.dtype, device=x2.device)  # (M, N)
        else:
            out = torch.zeros(rows, out_features, dtype=torch.float32, device=x2.device)  # (M, N), added into

        def grid(meta):
            return (
                triton.cdiv(out_features, meta["BLOCK_N"]),
                triton.cdiv(rows, meta["BLOCK_M"]),
                meta["SPLIT_K"],
            )

        kernel[grid](
            x2,
            weight,
            scale,
            bias if bias is not None else scale,
            out,
            rows,
            out_features,
            inner,
            triton.next_power_of_2(rows),
            x2.stride(0),
            weight.stride(0),
            out.stride(0),
            HAS_BIAS=bias is not None,
            WIDEN_BY_PTX=ptx_widens(weight.dtype, x2.dtype, rows),
            WIDEN_PTX=INT8_TO_FP16_PTX,
            **fixed,
        )
        return out if split == 1 else out.to(x2.dtype)

    launch.splits = sorted(kernels)
    launch.kernels = {split: kernel for split, (kernel, _) in kernels.items()}  # the autotuners' choices: .cache
    return launch


def split_for(rows: int, out_features: int, inner: int, splits) -> int:
    """SPLIT_K for a call: more than 1 only where the output has too few tiles to fill the GPU and K is long
    (a few dozen rows, a narrow output: the DiT's calls), from those the kernel was built with."""
    tiles = -(-out_features // 128) * -(-rows // 64)
    if rows > 64 or tiles >= 64 or inner < 2048 or len(splits) == 1:
        return 1
    return max(splits)


def kernel_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    split: int | None = None,
    tiles: tuple | None = None,
):
    """The Triton kernel on (..., K) -> (..., N), wherever Triton runs it (a GPU, or its CPU interpreter);
    ``split``: SPLIT_K (None: ``split_for``'s choice); ``tiles``: another tuning space than ``TILES``."""
    launch = triton_kernel(tuple(tiles)) if tiles is not None else triton_kernel()
    if launch is None:
        raise RuntimeError("the weight-only kernel needs Triton (pip install triton)")
    x2 = x.reshape(-1, x.shape[-1]).contiguous()  # (M, K)
    split = split_for(*x2.shape[:1], weight.shape[0], x2.shape[1], launch.splits) if split is None else split
    out = launch(x2, weight.contiguous(), scale.reshape(-1).contiguous(), bias, split)
    return out.view(*x.shape[:-1], weight.shape[0])


@torch.library.custom_op("groot_sage_ros::weight_only_linear", mutates_args=())
def weight_only_linear(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """(..., K) activations, (N, K) int8 / fp8 weight, (N,) scale, (N,) bias or None -> (..., N) in x's dtype:
    the Triton kernel on CUDA, the reference arithmetic elsewhere."""
    if x.is_cuda and triton_kernel() is not None:
        return kernel_linear(x, weight, scale, bias)
    return reference_linear(x, weight, scale, bias)


def kernel_rows(weight: torch.Tensor) -> int:
    """The most rows a call on ``weight`` sends through the kernel (``KERNEL_MAX_ROWS``; 0 off CUDA or
    without Triton): decided when a module is built, so that traced code only compares numbers."""
    if not weight.is_cuda or triton_kernel() is None:
        return 0
    return KERNEL_MAX_ROWS.get(weight.dtype, 0)


def linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, max_rows: int):
    """x @ (W * scale)^T + b: the kernel for calls of at most ``max_rows`` rows (``kernel_rows``), else the
    weight dequantised to x's dtype in traced code, then ``F.linear``."""
    if x.numel() // x.shape[-1] <= max_rows:
        return weight_only_linear(x, weight, scale, bias)
    return F.linear(x, weight.to(x.dtype) * scale.reshape(-1, 1).to(x.dtype), bias)  # (..., N)


@weight_only_linear.register_fake
def _(x, weight, scale, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _backward(ctx, grad: torch.Tensor):
    """The gradient in the activations only (the weights are frozen): what RTC's guided mode needs."""
    weight, scale = ctx.saved_tensors
    return grad @ dequantize(weight, scale, grad.dtype), None, None, None


def _save_weights(ctx, inputs, output):
    _, weight, scale, _ = inputs
    ctx.save_for_backward(weight, scale)


weight_only_linear.register_autograd(_backward, setup_context=_save_weights)
