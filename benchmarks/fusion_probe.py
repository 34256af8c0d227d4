"""Two ways to take the residual adds out of their own kernels, timed on the SigLIP and Qwen3 stacks at a
throughput batch (full-size random model) against the fast path, with the outputs compared:

- deferred: each repeated layer returns (residual, last branch output) and the next layer adds them inside
  its first norm, so inductor fuses that add into the norm's kernel (regional compilation stops fusion at
  the layer boundary otherwise);
- epilogue: the residual is the C matrix of the output projection's and the MLP's last GEMM
  (``addmm``, beta = 1), so cuBLAS adds it in the GEMM's epilogue; SigLIP's two biases join the norm
  kernel between them (the second one folded into the residual that the last GEMM reads).

    python benchmarks/fusion_probe.py --batch 64 --out fusion_probe.json
"""

from __future__ import annotations

import argparse
import json
import types

import torch
import torch.nn.functional as F

from groot_sage_ros.compilation import compile_arguments
from groot_sage_ros.config import n15_3b_config
from groot_sage_ros.engine import FeatureExtractor
from groot_sage_ros.fast_layers import linear_gelu_tanh, qwen3_attention, siglip_attention


def siglip_deferred(self, residual, delta):
    hidden_states = residual if delta is None else residual + delta  # the previous layer's MLP residual add
    hidden = hidden_states + self.self_attn.out_proj(siglip_attention(self, self.layer_norm1(hidden_states)))
    return hidden, self.mlp.fc2(linear_gelu_tanh(self.layer_norm2(hidden), self.mlp.fc1))


def qwen3_deferred(self, residual, delta, position_embeddings):
    hidden_states = residual if delta is None else residual + delta
    attn, mlp = self.self_attn, self.mlp
    out = qwen3_attention(self, self.input_layernorm(hidden_states), position_embeddings)  # (B, L, Hq d)
    hidden = hidden_states + attn.o_proj(out)
    gate, up = F.linear(self.post_attention_layernorm(hidden), mlp.fused_gate_up_weight).chunk(2, dim=-1)
    return hidden, mlp.down_proj(mlp.act_fn(gate) * up)


def siglip_epilogue(self, hidden_states):
    attn, mlp = self.self_attn, self.mlp
    batch, length, width = hidden_states.shape
    out = siglip_attention(self, self.layer_norm1(hidden_states)).reshape(-1, width)  # (N T, C)
    hidden = torch.addmm(hidden_states.reshape(-1, width), out, attn.out_proj.weight.t()) + attn.out_proj.bias
    mlp_in = linear_gelu_tanh(self.layer_norm2(hidden), mlp.fc1)  # (N T, 4304)
    return torch.addmm(hidden + mlp.fc2.bias, mlp_in, mlp.fc2.weight.t()).view(batch, length, width)


def qwen3_epilogue(self, hidden_states, position_embeddings):
    attn, mlp = self.self_attn, self.mlp
    batch, length, width = hidden_states.shape
    out = qwen3_attention(self, self.input_layernorm(hidden_states), position_embeddings)
    out = out.flatten(0, 1)  # (B L, Hq d)
    hidden = torch.addmm(hidden_states.reshape(-1, width), out, attn.o_proj.weight.t())  # (B L, D)
    gate, up = F.linear(self.post_attention_layernorm(hidden), mlp.fused_gate_up_weight).chunk(2, dim=-1)
    return torch.addmm(hidden, mlp.act_fn(gate) * up, mlp.down_proj.weight.t()).view(batch, length, width)


def cuda_ms(fn, iters: int = 10, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    if not torch.cuda.is_available():  # a CPU dry run of the script
        return 0.0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=304)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tiny", action="store_true", help="the tiny config on the CPU: a dry run")
    args = parser.parse_args()
    if args.tiny:
        from groot_sage_ros.config import RuntimeConfig
        from groot_sage_ros.tiny_checkpoint import tiny_config

        fx = FeatureExtractor.from_random(tiny_config(), device="cpu", dtype="float32",
                                          runtime=RuntimeConfig(compile="on"))  # fmt: skip
    else:
        fx = FeatureExtractor.from_random(n15_3b_config(), device="cuda", dtype="float16")
    device = fx.device
    eagle = fx.model.backbone.eagle_model
    vision = eagle.vision_model.vision_model
    lm = eagle.language_model.model
    report = {"batch": args.batch, "length": args.length}

    options = compile_arguments("default")  # as FastLayers compiles the plain regions
    deferred_vision = [torch.compile(types.MethodType(siglip_deferred, layer), **options)
                       for layer in vision.encoder.layers]  # fmt: skip
    deferred_lm = [torch.compile(types.MethodType(qwen3_deferred, layer), dynamic=True, **options)
                   for layer in lm.layers]  # fmt: skip
    epilogue_vision = [torch.compile(types.MethodType(siglip_epilogue, layer), **options)
                       for layer in vision.encoder.layers]  # fmt: skip
    epilogue_lm = [torch.compile(types.MethodType(qwen3_epilogue, layer), dynamic=True, **options)
                   for layer in lm.layers]  # fmt: skip

    def vision_plain(hidden):
        for layer in vision.encoder.layers:
            hidden = layer(hidden)
        return vision.post_layernorm(hidden)

    def vision_deferred(hidden):
        residual, delta = hidden, None
        for call in deferred_vision:
            residual, delta = call(residual, delta)
        return vision.post_layernorm(residual + delta)

    def vision_epilogue(hidden):
        for call in epilogue_vision:
            hidden = call(hidden)
        return vision.post_layernorm(hidden)

    def lm_epilogue(embeds, positions, rotary):
        hidden = embeds
        for call in epilogue_lm:
            hidden = call(hidden, rotary)
        return lm.norm(hidden)

    def lm_inputs(batch, length):
        embeds = torch.randn(batch, length, lm.config.hidden_size, device=device, dtype=fx.dtype) * 0.02
        positions = torch.arange(length, device=device).unsqueeze(0)
        return embeds, positions, lm.rotary_emb(embeds, positions)

    def lm_plain(embeds, positions, rotary):
        hidden = embeds
        for layer in lm.layers:
            hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary)
        return lm.norm(hidden)

    def lm_deferred(embeds, positions, rotary):
        residual, delta = embeds, None
        for call in deferred_lm:
            residual, delta = call(residual, delta, rotary)
        return lm.norm(residual + delta)

    width = vision.config.hidden_size
    for batch in (1, args.batch):  # batch 1 first, as the engine's warm-up does (then one dynamic recompile)
        patches = torch.randn(batch, vision.embeddings.num_patches, width, device=device, dtype=fx.dtype)
        vision_plain(patches), vision_deferred(patches), vision_epilogue(patches)
        lm_args = lm_inputs(batch, args.length)
        lm_plain(*lm_args), lm_deferred(*lm_args), lm_epilogue(*lm_args)
    stacks = {"vision": (patches,), "lm": lm_args}
    variants = {"vision": {"plain": vision_plain, "deferred": vision_deferred, "epilogue": vision_epilogue},
                "lm": {"plain": lm_plain, "deferred": lm_deferred, "epilogue": lm_epilogue}}  # fmt: skip
    for stack, calls in variants.items():
        reference = calls["plain"](*stacks[stack]).float()
        for name in ("deferred", "epilogue"):
            other = calls[name](*stacks[stack]).float()
            report[f"{stack}_{name}_rel_diff"] = ((other - reference).norm() / reference.norm()).item()
    for _ in range(2):  # twice: the spread between repeats
        for stack, calls in variants.items():
            for name, call in calls.items():
                ms = cuda_ms(lambda call=call, inputs=stacks[stack]: call(*inputs))
                report.setdefault(f"{stack}_{name}_ms", []).append(ms)
    print(json.dumps(report, indent=1))
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
