"""Issue 29's probe: what a Triton GEMM reaches at N1.5's batch-1 backbone shapes against cuBLAS fp16, with fp16
weights (Triton's ceiling) and with 8-bit weights widened in registers (a cast, or int8 by the magic-number PTX
conversion), in two layouts: x as the MMA's A operand (``xa``) or the widened weight as A from registers
(``wa``), m tiles adjacent in the grid. Ran once on an H100 (``triton_gemm_layouts_h100.json``):

    python benchmarks/archive/triton_gemm_layouts.py OUT.json
"""

import json
import sys
import traceback

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.testing import do_bench_cudagraph

I8_ASM = """{
.reg .b32 t, c;
xor.b32 t, $2, 0x80808080;
prmt.b32 $0, t, 0x64646464, 0x4140;
prmt.b32 $1, t, 0x64646464, 0x4342;
mov.b32 c, 0x64806480;
sub.f16x2 $0, $0, c;
sub.f16x2 $1, $1, c;
}"""


@triton.jit
def widen(w, MODE: tl.constexpr):
    # MODE 0: plain cast; 1: int8 magic-number asm (fp16 out)
    if MODE == 1:
        return tl.inline_asm_elementwise(I8_ASM_C, "=r,=r,r", [w], dtype=tl.float16, is_pure=True, pack=4)
    else:
        return w.to(tl.float16)


I8_ASM_C = tl.constexpr(I8_ASM)


@triton.jit
def cvt_kernel(w_ptr, o_ptr, n, MODE: tl.constexpr, B: tl.constexpr):
    offs = tl.program_id(0) * B + tl.arange(0, B)
    w = tl.load(w_ptr + offs, mask=offs < n)
    tl.store(o_ptr + offs, widen(w, MODE), mask=offs < n)


def cfg(bm, bn, bk, w, s, g=8):
    return triton.Config({"BM": bm, "BN": bn, "BK": bk, "GROUP": g}, num_warps=w, num_stages=s)


XA_CONFIGS = [
    cfg(64, 128, 64, 4, 4),
    cfg(64, 128, 128, 4, 3),
    cfg(64, 256, 64, 8, 3),
    cfg(128, 128, 64, 8, 3),
    cfg(128, 128, 64, 4, 4),
    cfg(128, 256, 64, 8, 3),
    cfg(64, 64, 128, 4, 4),
    cfg(128, 64, 128, 4, 4),
    cfg(64, 128, 64, 4, 5),
    cfg(128, 128, 128, 8, 3),
]
WA_CONFIGS = [
    cfg(64, 128, 64, 4, 4),
    cfg(64, 128, 128, 4, 3),
    cfg(128, 128, 64, 8, 3),
    cfg(64, 256, 64, 8, 3),
    cfg(128, 256, 64, 8, 3),
    cfg(32, 128, 128, 4, 4),
    cfg(64, 64, 128, 4, 4),
    cfg(128, 128, 128, 8, 3),
    cfg(64, 128, 64, 4, 5),
    cfg(32, 64, 128, 4, 4),
]


@triton.jit
def tile_ids(M, N, BM: tl.constexpr, BN: tl.constexpr, GROUP: tl.constexpr):
    # grouped ordering: GROUP n-tiles share... here: all m tiles of an n tile run next to each other
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BM)
    pid_m = pid % num_m
    pid_n = pid // num_m
    return pid_m, pid_n


@triton.autotune(configs=XA_CONFIGS, key=["MB", "N", "K", "MODE"], warmup=5, rep=20)
@triton.jit
def mm_xa(
    x_ptr,
    w_ptr,
    s_ptr,
    o_ptr,
    M,
    N,
    K,
    MB,
    MODE: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GROUP: tl.constexpr,
):
    # out (M, N) = x (M, K) @ widen(W)^T (K, N): x is the wgmma's A (shared memory), W^T its B
    pid_m, pid_n = tile_ids(M, N, BM, BN, GROUP)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    x_ptrs = x_ptr + offs_m[:, None] * K + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[None, :] * K + offs_k[:, None]
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K // BK):
        x = tl.load(x_ptrs, mask=offs_m[:, None] < M, other=0.0)
        w = tl.load(w_ptrs, mask=offs_n[None, :] < N, other=0.0)
        acc = tl.dot(x, widen(w, MODE), acc)
        x_ptrs += BK
        w_ptrs += BK
    acc = acc * tl.load(s_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    tl.store(
        o_ptr + offs_m[:, None] * N + offs_n[None, :],
        acc.to(tl.float16),
        mask=(offs_m[:, None] < M) & (offs_n[None, :] < N),
    )


@triton.autotune(configs=WA_CONFIGS, key=["MB", "N", "K", "MODE"], warmup=5, rep=20)
@triton.jit
def mm_wa(
    x_ptr,
    w_ptr,
    s_ptr,
    o_ptr,
    M,
    N,
    K,
    MB,
    MODE: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GROUP: tl.constexpr,
):
    # out^T (N, M) = widen(W) (N, K) @ x^T (K, M): W is the wgmma's A (registers), m tiles adjacent in the grid
    pid_m, pid_n = tile_ids(M, N, BM, BN, GROUP)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    w_ptrs = w_ptr + offs_n[:, None] * K + offs_k[None, :]
    x_ptrs = x_ptr + offs_m[None, :] * K + offs_k[:, None]
    acc = tl.zeros((BN, BM), dtype=tl.float32)
    for k in range(0, K // BK):
        w = tl.load(w_ptrs, mask=offs_n[:, None] < N, other=0.0)
        x = tl.load(x_ptrs, mask=offs_m[None, :] < M, other=0.0)
        acc = tl.dot(widen(w, MODE), x, acc)
        x_ptrs += BK
        w_ptrs += BK
    acc = acc * tl.load(s_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[:, None]
    tl.store(
        o_ptr + offs_m[None, :] * N + offs_n[:, None],
        acc.to(tl.float16),
        mask=(offs_m[None, :] < M) & (offs_n[:, None] < N),
    )


def run(kernel, x, w, s, mode):
    M, K = x.shape
    N = w.shape[0]
    out = torch.empty(M, N, device=x.device, dtype=torch.float16)
    def grid(meta):
        return (triton.cdiv(M, meta["BM"]) * triton.cdiv(N, meta["BN"]),)
    kernel[grid](x, w, s, out, M, N, K, triton.next_power_of_2(M), MODE=mode)
    return out


def ptx_has_wgmma(kernel):
    try:
        for k, compiled in kernel.fn.device_caches[0][0].items() if hasattr(kernel.fn, "device_caches") else []:
            return "wgmma" in compiled.asm.get("ptx", "")
    except Exception:
        return None
    return None


SHAPES = [  # rows, out, in, calls per frame set (N1.5 backbone, batch 1)
    (256, 3456, 1152, 27),
    (256, 1152, 1152, 27),
    (256, 4304, 1152, 27),
    (256, 1152, 4304, 27),
    (288, 4096, 2048, 12),
    (288, 2048, 2048, 16),
    (288, 12288, 2048, 12),
    (288, 2048, 6144, 12),
    (288, 3072, 2048, 8),
    (288, 8192, 2048, 4),
    (288, 2048, 8192, 4),
    (288, 6144, 2048, 4),
]


def main():
    out_path = sys.argv[1]
    results = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "shapes": {},
    }
    # the asm conversion: exact on every int8 value?
    w = torch.arange(-128, 128, device="cuda", dtype=torch.int8).repeat(64)
    o = torch.empty(w.shape, device="cuda", dtype=torch.float16)
    try:
        cvt_kernel[(w.numel() // 1024,)](w, o, w.numel(), MODE=1, B=1024)
        results["asm_exact"] = bool(torch.equal(o, w.half()))
        if not results["asm_exact"]:
            results["asm_sample"] = o[:8].tolist()
    except Exception:
        results["asm_error"] = traceback.format_exc()[-1500:]
    print(json.dumps({k: v for k, v in results.items() if k != "shapes"}), flush=True)
    for rows, n, k, calls in SHAPES:
        torch.manual_seed(0)
        x = torch.randn(rows, k, device="cuda", dtype=torch.float16)
        wf = torch.randn(n, k, device="cuda", dtype=torch.float16) / k**0.5
        s8 = (wf.abs().amax(1).float() / 127).clamp(min=1e-12)
        w8 = torch.round(wf.float() / s8[:, None]).clamp(-127, 127).to(torch.int8)
        s8 = s8.half()
        sf = (wf.abs().amax(1).float() / 448).clamp(min=1e-12)
        wq = (wf.float() / sf[:, None]).to(torch.float8_e4m3fn)
        ones = torch.ones(n, device="cuda", dtype=torch.float16)
        ref8 = F.linear(x.float(), w8.float() * s8.float()[:, None])
        variants = {
            "fp16_cublas": (lambda: F.linear(x, wf), None),
            "int8_deq_cublas": (lambda: F.linear(x, w8.half() * s8[:, None]), ref8),
        }
        for name, kern in (("xa", mm_xa), ("wa", mm_wa)):
            variants[f"{name}_fp16"] = (lambda kern=kern: run(kern, x, wf, ones, 0), None)
            variants[f"{name}_int8_cast"] = (lambda kern=kern: run(kern, x, w8, s8, 0), ref8)
            if results.get("asm_exact"):
                variants[f"{name}_int8_asm"] = (lambda kern=kern: run(kern, x, w8, s8, 1), ref8)
            variants[f"{name}_fp8"] = (lambda kern=kern: run(kern, x, wq, sf.half(), 0), None)
        entry = {"calls": calls}
        for vname, (fn, ref) in variants.items():
            try:
                got = fn()
                torch.cuda.synchronize()
                if ref is not None:
                    entry[vname + "_err"] = float((got.float() - ref).norm() / ref.norm())
                entry[vname + "_us"] = do_bench_cudagraph(fn, rep=40) * 1e3
            except Exception:
                entry[vname + "_error"] = traceback.format_exc()[-600:]
        for name, kern in (("xa", mm_xa), ("wa", mm_wa)):
            entry[name + "_picks"] = {
                str(key): str(c)
                for key, c in kern.cache.items()
                if key[0] == triton.next_power_of_2(rows) and key[1] == n and key[2] == k
            }
        results["shapes"][f"{rows}x{n}x{k}"] = entry
        print(f"{rows}x{n}x{k}", {a: round(b, 1) for a, b in entry.items() if a.endswith("_us")}, flush=True)
        json.dump(results, open(out_path, "w"), indent=1)
    totals = {}
    for entry in results["shapes"].values():
        for key, value in entry.items():
            if key.endswith("_us"):
                totals[key] = totals.get(key, 0) + value * entry["calls"]
    results["totals_us_per_frame_set"] = totals
    json.dump(results, open(out_path, "w"), indent=1)
    print(json.dumps(totals, indent=1))
    # ptx check on one compiled kernel each
    for name, kern in (("xa", mm_xa), ("wa", mm_wa)):
        try:
            cache = kern.fn.device_caches
            found = []
            for dev, val in cache.items():
                for key, compiled in val[0].items():
                    found.append(("wgmma" in compiled.asm["ptx"], str(key)[:80]))
            results[name + "_wgmma"] = found[:40]
        except Exception:
            results[name + "_wgmma_error"] = traceback.format_exc()[-400:]
    json.dump(results, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main()
