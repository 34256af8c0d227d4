"""The GR00T N1.5 vision-language backbone (Eagle 2.5 VL, truncated), built from transformers' classes.

Module paths mirror the checkpoint under ``backbone.``::

    eagle_model.vision_model.vision_model.*   SigLIP tower (transformers SiglipVisionModel internals)
    eagle_model.mlp1.0.*                      Linear(vision hidden -> LLM hidden), one per patch
    eagle_model.language_model.model.*        Qwen3Model truncated to select_layer layers
    eagle_linear.*                            only when backbone_cfg.project_to_dim is set

The feature is the LLM's last hidden state after the final RMSNorm (what HF puts in hidden_states[-1]),
for every token. No LM logits are computed.

The backbone runs its own layer loops (SigLIP's and Qwen3's) so that a caller can pass one callable per
layer (``LayerCalls``): the engine's fast path passes fused, compiled functions (``fast.py``); the
reference path passes none and every layer runs as transformers built it. Nothing is switched on the
modules, so both paths can run at once.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn
from transformers import Qwen3Config, Qwen3Model, SiglipVisionConfig, SiglipVisionModel

from ..common.tokens import scatter_image_embeddings
from .config import BackboneConfig

LayerCalls = Mapping[str, Sequence[Callable[..., torch.Tensor]]]  # region name -> one callable per layer


class VisionTower(nn.Module):
    """Holds the SigLIP encoder at ``.vision_model`` so keys read ``vision_model.vision_model.*``.

    transformers 4.x nests the encoder in ``SiglipVisionModel.vision_model``; 5.x flattened it. Taking
    the module that owns ``embeddings``/``encoder`` keeps the checkpoint's key names on both.
    """

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        siglip = SiglipVisionModel(config)
        self.vision_model = getattr(siglip, "vision_model", siglip)

    def forward(self, pixel_values: torch.Tensor, layer_calls: Sequence[Callable] | None = None) -> torch.Tensor:
        """(N, 3, 224, 224) -> (N, 256, C_vis), after post_layernorm; SigLIP's forward, layer by layer."""
        tower = self.vision_model
        hidden = tower.embeddings(pixel_values)  # (N, 256, C_vis)
        for k, layer in enumerate(tower.encoder.layers):
            if layer_calls is not None:
                hidden = layer_calls[k](hidden)
            else:
                out = layer(hidden, None)
                hidden = out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple
        return tower.post_layernorm(hidden)


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

    @property
    def language_layers(self) -> nn.ModuleList:
        """The kept Qwen3 decoder layers (the last one's attention: ``common/attention_maps.py``)."""
        return self.eagle_model.language_model.model.layers

    @property
    def image_token_id(self) -> int:
        return self.cfg.image_token_id

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

    def embed_images(self, pixel_values: torch.Tensor, calls: LayerCalls | None = None) -> torch.Tensor:
        vision = self.eagle_model.vision_model(pixel_values, (calls or {}).get("vision"))  # (N, 256, C_vis)
        return self.eagle_model.mlp1(vision)  # (N, 256, D_llm)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L) int64, images' <IMG_CONTEXT> runs in camera order
        pixel_values: torch.Tensor,  # (N, 3, H, W), N = B * cameras, sample-major; padding is on the right
        calls: LayerCalls | None = None,  # "vision", "language": one callable per layer; None: as built
    ) -> torch.Tensor:
        """Per-token features (B, L, D)."""
        lm = self.eagle_model.language_model.model
        embeds = lm.embed_tokens(input_ids)  # (B, L, D)
        image_embeds = self.embed_images(pixel_values.to(embeds.dtype), calls)  # (N, 256, D)
        embeds = scatter_image_embeddings(embeds, image_embeds, input_ids == self.cfg.image_token_id)
        hidden = run_decoder(lm, embeds, (calls or {}).get("language"))  # (B, L, D), after the final RMSNorm
        return self.eagle_linear(hidden)


def run_decoder(lm, embeds: torch.Tensor, layer_calls: Sequence[Callable] | None = None) -> torch.Tensor:
    """Qwen3Model's forward for our inputs, layer by layer: causal attention, positions 0..L-1, final norm.

    Right padding is exact for a causal LLM: real tokens never attend to the pads that follow them and
    keep positions 0..n-1, as in an unpadded batch of one. So no mask is built at all; transformers' own
    forward would inspect position ids for packed sequences with a host-side check (a GPU sync) here.
    """
    positions = torch.arange(embeds.shape[1], device=embeds.device).unsqueeze(0)  # (1, L)
    rotary = lm.rotary_emb(embeds, positions)  # (cos, sin), each (1, L, d)
    hidden = embeds
    for k, layer in enumerate(lm.layers):
        if layer_calls is not None:
            hidden = layer_calls[k](hidden, *rotary)
            continue
        out = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary, use_cache=False)
        hidden = out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple
    return lm.norm(hidden)
