"""The GR00T N1.5 vision-language backbone (Eagle 2.5 VL, truncated), built from transformers' classes.

Module paths mirror the checkpoint under ``backbone.``::

    eagle_model.vision_model.vision_model.*   SigLIP tower (transformers SiglipVisionModel internals)
    eagle_model.mlp1.0.*                      Linear(vision hidden -> LLM hidden), one per patch
    eagle_model.language_model.model.*        Qwen3Model truncated to select_layer layers
    eagle_linear.*                            only when backbone_cfg.project_to_dim is set

The feature is the LLM's last hidden state after the final RMSNorm (what HF puts in hidden_states[-1]),
for every token. No LM logits are computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import Qwen3Config, Qwen3Model, SiglipVisionConfig, SiglipVisionModel

from ..config import BackboneConfig


@dataclass
class BackboneOutput:
    features: torch.Tensor  # (B, L, D)
    attention_mask: torch.Tensor  # (B, L), 1 = real token, 0 = right padding


class VisionTower(nn.Module):
    """Holds the SigLIP encoder at ``.vision_model`` so keys read ``vision_model.vision_model.*``.

    transformers 4.x nests the encoder in ``SiglipVisionModel.vision_model``; 5.x flattened it. Taking
    the module that owns ``embeddings``/``encoder`` keeps the checkpoint's key names on both.
    """

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        siglip = SiglipVisionModel(config)
        self.vision_model = getattr(siglip, "vision_model", siglip)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # (N, 3, 224, 224) -> (N, 256, C_vis), after post_layernorm
        return self.vision_model(pixel_values=pixel_values).last_hidden_state


class LanguageModel(nn.Module):
    """Holds the Qwen3 decoder at ``.model`` (keys ``language_model.model.*``); no lm_head."""

    def __init__(self, config: Qwen3Config):
        super().__init__()
        self.model = Qwen3Model(config)


class EagleModel(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        vision_cfg = SiglipVisionConfig(**cfg.vision_config, vision_use_head=cfg.build_siglip_head)
        vision_cfg._attn_implementation = "sdpa"
        text_cfg = Qwen3Config(**{**cfg.text_config, "num_hidden_layers": cfg.select_layer})
        text_cfg._attn_implementation = "sdpa"
        text_cfg.use_cache = False
        self.vision_model = VisionTower(vision_cfg)
        self.mlp1 = nn.Sequential(nn.Linear(vision_cfg.hidden_size, text_cfg.hidden_size))
        self.language_model = LanguageModel(text_cfg)


class EagleBackbone(nn.Module):
    """images + prompt ids -> per-token features (B, L, D)."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.eagle_model = EagleModel(cfg)
        hidden = cfg.text_config["hidden_size"]
        if cfg.project_to_dim is not None:
            self.eagle_linear = nn.Linear(hidden, cfg.project_to_dim)
        else:
            self.eagle_linear = nn.Identity()

    def materialize_buffers(self, device: torch.device | str) -> None:
        """Rebuild the non-persistent buffers (not in any checkpoint) after loading onto ``device``.

        A module built on the meta device has no values for them: the rotary ``inv_freq`` tables and
        SigLIP's ``position_ids``. Both are cheap, deterministic functions of the config.
        """
        lm = self.eagle_model.language_model.model
        with torch.device(device):
            lm.rotary_emb = type(lm.rotary_emb)(config=lm.config)
        embeddings = self.eagle_model.vision_model.vision_model.embeddings
        num_positions = embeddings.position_embedding.num_embeddings
        ids = torch.arange(num_positions, device=device).expand((1, -1))
        embeddings.register_buffer("position_ids", ids, persistent=False)

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        vision = self.eagle_model.vision_model(pixel_values)  # (N, 256, C_vis)
        return self.eagle_model.mlp1(vision)  # (N, 256, D_llm)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L) int64, images' <IMG_CONTEXT> runs in camera order
        pixel_values: torch.Tensor,  # (N, 3, H, W), N = B * cameras, sample-major
        attention_mask: torch.Tensor,  # (B, L); padding is on the right
    ) -> BackboneOutput:
        lm = self.eagle_model.language_model.model
        embeds = lm.embed_tokens(input_ids)  # (B, L, D)
        image_embeds = self.embed_images(pixel_values.to(embeds.dtype))  # (N, 256, D)
        embeds = scatter_image_embeddings(embeds, image_embeds, input_ids == self.cfg.image_token_id)
        hidden = run_decoder(lm, embeds)  # (B, L, D), after the final RMSNorm
        return BackboneOutput(features=self.eagle_linear(hidden), attention_mask=attention_mask)


def run_decoder(lm, embeds: torch.Tensor) -> torch.Tensor:
    """Qwen3Model's forward for our inputs, layer by layer: causal attention, positions 0..L-1, final norm.

    Right padding is exact for a causal LLM: real tokens never attend to the pads that follow them and
    keep positions 0..n-1, as in an unpadded batch of one. So no mask is built at all; transformers' own
    forward would inspect position ids for packed sequences with a host-side check (a GPU sync) here.
    """
    positions = torch.arange(embeds.shape[1], device=embeds.device).unsqueeze(0)  # (1, L)
    rotary = lm.rotary_emb(embeds, positions)  # (cos, sin)
    hidden = embeds
    for layer in lm.layers:
        out = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary, use_cache=False)
        hidden = out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple
    return lm.norm(hidden)


def scatter_image_embeddings(
    embeds: torch.Tensor,  # (B, L, D)
    image_embeds: torch.Tensor,  # (N, T, D)
    image_mask: torch.Tensor,  # (B, L) bool, N*T True entries
) -> torch.Tensor:
    """Write image embeddings, in order, into the <IMG_CONTEXT> positions of the flattened batch.

    Same result as Eagle's ``embeds[mask] = image_embeds`` but with static shapes and no host sync:
    the k-th True position (row-major over B*L) takes the k-th image token.
    """
    batch, length, dim = embeds.shape
    flat_mask = image_mask.reshape(-1)  # (B*L,)
    flat_images = image_embeds.reshape(-1, dim)  # (N*T, D)
    index = (torch.cumsum(flat_mask.to(torch.int64), 0) - 1).clamp_(min=0)  # (B*L,)
    gathered = flat_images.index_select(0, index.clamp_(max=flat_images.shape[0] - 1))  # (B*L, D)
    out = torch.where(flat_mask.unsqueeze(-1), gathered, embeds.reshape(-1, dim))
    return out.view(batch, length, dim)
