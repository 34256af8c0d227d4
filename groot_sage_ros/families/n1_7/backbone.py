"""The GR00T N1.7 vision-language backbone (Cosmos-Reason2-2B, a Qwen3-VL), built from transformers' classes.

Module paths mirror the checkpoint under ``backbone.``::

    model.model.visual.*           Qwen3VLVisionModel: patch embed, learned positions, 24 blocks, mergers
    model.model.language_model.*   Qwen3VLTextModel cut to select_layer decoder layers
    model.lm_head.weight           tied to the embeddings, never needed (no logits), skipped if stored

The feature is the output of the last kept decoder layer, before the final RMSNorm, for every token
(LeRobot ``Qwen3Backbone._last_decoder_layer_output``; Isaac-GR00T's ``hidden_states[-1]`` on
transformers 4.57). ``language_model.norm`` stays in the checkpoint and is loaded but not applied.

What differs from Qwen3VLModel.forward, and why it computes the same function for our inputs:
- every frame is one 256x256 image (grid t=1, 16x16 patches): the patch order (2x2 merge blocks), the
  learned position table resampled bilinearly (align_corners) to 16x16 and the vision rotary angles
  are the same for every frame, so they are computed once (``FrameGrid``) instead of per call;
- M-RoPE positions (``mrope_positions``) are computed from the ids on the device without host syncs:
  text tokens count up, an image's 64 tokens take (t, h, w) = (p, p + row, p + col) from its start p,
  and the text after it continues at p + 8, as ``get_rope_index`` does;
- deepstack features are added at the image positions after text layers 0..2 with ``torch.where``
  (the same sums as ``hidden[mask] + visual``, but static shapes for CUDA graphs).

The loops over vision blocks and decoder layers take one callable per layer (``calls``: "vision",
"language"); without them every layer runs as transformers built it (the reference path).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn
from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLTextConfig, Qwen3VLVisionConfig
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextModel, Qwen3VLVisionModel

from ..common.tokens import scatter_image_embeddings
from .config import BackboneConfig
from .prompt import IMAGE_TOKEN_ID

LayerCalls = Mapping[str, Sequence[Callable[..., torch.Tensor]]]  # region name -> one callable per layer
VISION_ROPE_THETA = 10000.0  # Qwen3-VL's vision rotary base


def vision_config(cfg: BackboneConfig) -> Qwen3VLVisionConfig:
    config = Qwen3VLVisionConfig(**cfg.vision_config)
    config._attn_implementation = "sdpa"
    return config


def text_config(cfg: BackboneConfig) -> Qwen3VLTextConfig:
    config = Qwen3VLTextConfig(**{**cfg.text_config, "num_hidden_layers": cfg.select_layer})
    config._attn_implementation = "sdpa"
    config.use_cache = False
    return config


class Qwen3VLParts(nn.Module):
    """``Qwen3VLModel``'s two towers at ``.visual`` and ``.language_model`` (its keys), nothing else."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.visual = Qwen3VLVisionModel(vision_config(cfg))
        self.language_model = Qwen3VLTextModel(text_config(cfg))


class Qwen3VLHolder(nn.Module):
    """``Qwen3VLForConditionalGeneration`` without its (tied, unused) LM head: keys ``model.model.*``."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.model = Qwen3VLParts(cfg)


class FrameGrid(nn.Module):
    """What is the same for every frame: patch positions in merge-block order, the bilinear taps into the
    learned position table, the vision rotary angles. Non-persistent buffers (functions of the config)."""

    def __init__(self, cfg: BackboneConfig, device: torch.device | str = "cpu"):
        super().__init__()
        vision = cfg.vision_config
        patch, merge = vision["patch_size"], vision["spatial_merge_size"]
        side = cfg.image_size // patch  # patches per side (16)
        table = int(vision["num_position_embeddings"] ** 0.5)  # learned positions per side (48)
        blocks = side // merge
        index = torch.arange(side * side, device=device)
        in_col, in_row = index % merge, (index // merge) % merge
        block_col, block_row = (index // (merge * merge)) % blocks, index // (merge * merge * blocks)
        row, col = block_row * merge + in_row, block_col * merge + in_col  # (T,) each, merge-block order
        # bilinear, align_corners=True resampling of the table x table grid to side x side (Qwen3-VL's)
        coords = torch.linspace(0, table - 1, side, device=device)  # (side,)
        low = coords.int()
        high = (low + 1).clamp(max=table - 1)
        frac = coords - low
        h0, h1, dh = low[row], high[row], frac[row]
        w0, w1, dw = low[col], high[col], frac[col]
        taps = torch.stack([h0 * table + w0, h0 * table + w1, h1 * table + w0, h1 * table + w1])  # (4, T)
        weights = torch.stack([(1 - dh) * (1 - dw), (1 - dh) * dw, dh * (1 - dw), dh * dw])  # (4, T)
        self.register_buffer("taps", taps, persistent=False)
        self.register_buffer("weights", weights, persistent=False)
        head_dim = vision["hidden_size"] // vision["num_heads"]
        half = head_dim // 2
        inv_freq = 1.0 / (VISION_ROPE_THETA ** (torch.arange(0, half, 2, dtype=torch.float, device=device) / half))
        angles = torch.cat([row[:, None].float() * inv_freq, col[:, None].float() * inv_freq], dim=-1)  # (T, d/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, d)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.patches, self.patch, self.merge = side * side, patch, merge

    def positions(self, pos_embed: nn.Embedding) -> torch.Tensor:
        """The learned position embedding of each patch (T, C), resampled to the frame's grid."""
        taps = pos_embed(self.taps) * self.weights[:, :, None].to(pos_embed.weight.dtype)  # (4, T, C)
        return taps[0] + taps[1] + taps[2] + taps[3]


def patchify(pixels: torch.Tensor, patch: int, merge: int, temporal: int) -> torch.Tensor:
    """(N, 3, S, S) -> (N * T, 3 * temporal * patch * patch): the Qwen2-VL image processor's flattening, the
    still frame repeated ``temporal`` times, patches in 2x2 merge-block order."""
    n, channels, size, _ = pixels.shape
    blocks = size // (patch * merge)
    x = pixels.view(n, channels, blocks, merge, patch, blocks, merge, patch)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # (N, bh, bw, m, m, C, P, P)
    x = x.unsqueeze(-3).expand(*x.shape[:6], temporal, patch, patch)  # (N, bh, bw, m, m, C, T, P, P)
    return x.reshape(n * blocks * blocks * merge * merge, -1)


def mrope_positions(image_mask: torch.Tensor, tokens_per_image: int, grid: int) -> torch.Tensor:
    """(B, L) bool image-token mask -> (3, B, L) M-RoPE (t, h, w) positions of every token, each sample from 0;
    images are runs of ``tokens_per_image`` = grid x grid tokens (``get_rope_index`` for one still image)."""
    is_image = image_mask.long()
    images_before = torch.cumsum(is_image, dim=1) - is_image  # image tokens before each token
    text_before = torch.cumsum(1 - is_image, dim=1) - (1 - is_image)
    runs_before, k = images_before // tokens_per_image, images_before % tokens_per_image
    start = text_before + runs_before * grid  # where this token's image (or the text) continues from
    row, col = (k // grid) * is_image, (k % grid) * is_image
    return torch.stack([start, start + row, start + col])  # text: all three rows equal


class Qwen3VLBackbone(nn.Module):
    """images + prompt ids -> per-token features (B, L, D), the last kept layer's output before the norm."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Qwen3VLHolder(cfg)
        self.grid = FrameGrid(cfg, device="meta")

    @property
    def visual(self) -> Qwen3VLVisionModel:
        return self.model.model.visual

    @property
    def language_model(self) -> Qwen3VLTextModel:
        return self.model.model.language_model

    @property
    def language_layers(self) -> nn.ModuleList:
        """The kept decoder layers (the last one's attention: ``common/attention_maps.py``)."""
        return self.language_model.layers

    @property
    def image_token_id(self) -> int:
        return IMAGE_TOKEN_ID

    def materialize_buffers(self, device: torch.device | str) -> None:
        """Rebuild the non-persistent buffers (rotary tables, the frame grid) after loading onto ``device``."""
        lm = self.language_model
        with torch.device(device):
            lm.rotary_emb = type(lm.rotary_emb)(config=lm.config)
        # transformers' vision rotary table (its constructor differs between versions) is never used: the
        # angles are the frame grid's
        self.visual.rotary_pos_emb = nn.Identity()
        self.grid = FrameGrid(self.cfg, device=device)

    def encode_images(self, pixels: torch.Tensor, calls: LayerCalls | None = None):
        """(N, 3, S, S) normalised frames -> merged image tokens (N * 64, D) and the deepstack features
        (one (N * 64, D) tensor per deepstack level)."""
        visual, grid, vision = self.visual, self.grid, self.cfg.vision_config
        n, per_frame = pixels.shape[0], grid.patches
        patches = patchify(pixels, grid.patch, grid.merge, vision["temporal_patch_size"])  # (N * T, 3 * 2 * P * P)
        hidden = visual.patch_embed(patches)  # (N * T, C)
        hidden = hidden.view(n, per_frame, -1) + grid.positions(visual.pos_embed).to(hidden.dtype)  # (N, T, C)
        hidden = hidden.view(n * per_frame, -1)
        layer_calls = (calls or {}).get("vision")
        if layer_calls is not None:
            hidden = hidden.view(n, per_frame, -1)  # the fast blocks attend within each frame: (N, T, C)
        else:
            cu_seqlens = torch.arange(n + 1, device=pixels.device, dtype=torch.int32) * per_frame
            rotary = (grid.cos.repeat(n, 1), grid.sin.repeat(n, 1))  # (N * T, d) each
        deepstack, levels = [], vision["deepstack_visual_indexes"]
        for k, block in enumerate(visual.blocks):
            if layer_calls is not None:
                hidden = layer_calls[k](hidden, grid.cos, grid.sin)
            else:
                hidden = block(hidden, cu_seqlens=cu_seqlens, position_embeddings=rotary)
            if k in levels:
                merger = visual.deepstack_merger_list[levels.index(k)]
                deepstack.append(merger(hidden.reshape(n * per_frame, -1)))  # (N * 64, D)
        return visual.merger(hidden.reshape(n * per_frame, -1)), deepstack  # (N * 64, D)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L) int64, each frame's <|image_pad|> run in camera order
        pixel_values: torch.Tensor,  # (N, 3, S, S), N = B * cameras, sample-major; padding is on the right
        calls: LayerCalls | None = None,  # "vision", "language": one callable per layer; None: as built
    ) -> torch.Tensor:
        """Per-token features (B, L, D)."""
        lm = self.language_model
        image_mask = input_ids == IMAGE_TOKEN_ID  # (B, L)
        embeds = lm.embed_tokens(input_ids)  # (B, L, D)
        images, deepstack = self.encode_images(pixel_values.to(embeds.dtype), calls)  # (N * 64, D)
        images = images.view(pixel_values.shape[0], -1, images.shape[-1])  # (N, 64, D)
        hidden = scatter_image_embeddings(embeds, images, image_mask)
        positions = mrope_positions(image_mask, self.cfg.tokens_per_image, self.cfg.merged_grid)  # (3, B, L)
        cos, sin = lm.rotary_emb(hidden, positions)  # (B, L, d) each
        layer_calls = (calls or {}).get("language")
        for k, layer in enumerate(lm.layers):
            if layer_calls is not None:
                hidden = layer_calls[k](hidden, cos, sin)
            else:
                out = layer(hidden, position_embeddings=(cos, sin), attention_mask=None, use_cache=False)
                hidden = out[0] if isinstance(out, tuple) else out
            if k < len(deepstack):
                extra = deepstack[k].view(images.shape).to(images.dtype)  # (N, 64, D)
                visual = scatter_image_embeddings(torch.zeros_like(hidden), extra, image_mask)
                hidden = torch.where(image_mask.unsqueeze(-1), hidden + visual, hidden)
        return hidden  # before language_model.norm, as NVIDIA takes it
