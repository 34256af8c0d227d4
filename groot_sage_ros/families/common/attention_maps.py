"""The teacher's attention from each token to the image tokens in its last kept layer: what ``extract
--attention`` stores and ``distill --attention-weight`` matches (the founding plan's attention transfer).

Both families' language layers are Qwen3 decoder layers (N1.5: Qwen3; N1.7: Qwen3-VL's text model):
pre-norm, per-head RMSNorm on queries and keys, rotary angles given to each layer, grouped key-value heads,
causal. ``capture_last_layer_input`` records what the last kept layer receives (its hidden states and
rotary angles) while the backbone runs, on the reference path (a hook on the module) or the fast path
(its per-layer callable wrapped); ``attention_probabilities`` recomputes that layer's attention weights
from it with the layer's own modules (the layer itself runs SDPA, which does not return them).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb


def attention_probabilities(layer: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """(B, H, L, L) float32 causal attention weights of a Qwen3 decoder ``layer`` on its input ``hidden``
    (B, L, D), with its rotary angles ``cos``, ``sin`` (B or 1, L, d); and the values (B, H, L, d) they weigh."""
    attention = layer.self_attn
    batch, length, _ = hidden.shape
    d = attention.head_dim
    h = layer.input_layernorm(hidden)  # (B, L, D)
    q = attention.q_norm(attention.q_proj(h).view(batch, length, -1, d)).transpose(1, 2)  # (B, Hq, L, d)
    k = attention.k_norm(attention.k_proj(h).view(batch, length, -1, d)).transpose(1, 2)  # (B, Hk, L, d)
    v = attention.v_proj(h).view(batch, length, -1, d).transpose(1, 2)  # (B, Hk, L, d)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)  # as the layer (and the fused one, fast_blocks.py) applies them
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, Hq, L, d)
    scores = (q.float() @ k.float().transpose(-1, -2)) * attention.scaling  # (B, Hq, L, L)
    causal = torch.ones(length, length, dtype=torch.bool, device=hidden.device).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1), v


def image_columns(weights: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
    """(B, L, L) attention weights, (B, L) image tokens (the same count T in every sample) -> (B, L, T): each
    token's weights on the image tokens (rows before the first image token are 0)."""
    batch, length, _ = weights.shape
    images = int(image_mask[0].sum())
    return weights.masked_select(image_mask[:, None, :]).view(batch, length, images)


def to_images(probabilities: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
    """(B, H, L, L) weights -> (B, L, T): each token's attention to the image tokens, averaged over heads."""
    return image_columns(probabilities.mean(dim=1), image_mask)


@contextmanager
def capture_last_layer_input(layers: nn.ModuleList, calls: dict | None):
    """While the backbone runs: ``(calls to pass it, captured)``, where ``captured`` fills with the last
    layer's input ``hidden``, ``cos`` and ``sin``. ``calls`` None: a hook on the module (reference path);
    else the fast path's callables, the last language layer's wrapped."""
    captured: dict = {}
    if calls is None:

        def hook(module, args, kwargs):
            captured["hidden"] = args[0] if args else kwargs["hidden_states"]
            captured["cos"], captured["sin"] = kwargs["position_embeddings"]

        handle = layers[-1].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield None, captured
        finally:
            handle.remove()
        return
    language = list(calls["language"])
    last = language[-1]

    def wrapped(hidden, cos, sin):
        captured.update(hidden=hidden, cos=cos, sin=sin)
        return last(hidden, cos, sin)

    language[-1] = wrapped
    yield {**calls, "language": language}, captured


def features_and_image_attention(backbone, layers: nn.ModuleList, input_ids, pixel_values, image_token_id, calls=None):
    """The backbone's features (B, L, D) and its last kept layer's attention to the image tokens (B, L, T)."""
    with capture_last_layer_input(layers, calls) as (run_calls, captured):
        features = backbone(input_ids, pixel_values, run_calls)
    probabilities, _ = attention_probabilities(layers[-1], captured["hidden"], captured["cos"], captured["sin"])
    return features, to_images(probabilities, input_ids == image_token_id)
