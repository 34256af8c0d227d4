"""GR00T N1.5's configuration: the ``config.json`` schema and the one home for the model's defaults.

A checkpoint's ``config.json`` follows the ``GR00T_N1_5`` schema (``backbone_cfg``, ``action_head_cfg``).
The real N1.5-3B file does not carry the SigLIP and Qwen3 dims: they come from the Eagle 2.5 VL config of
the code package, which we keep here as the built-in default. A checkpoint may override them with
``backbone_cfg.eagle_config = {"vision_config": {...}, "text_config": {...}}`` in transformers' field names
(the tiny checkpoint does; real checkpoints do not).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

from ..common.validation import check_divides, check_sizes
from .prompt import IMAGE_TOKEN_ID

# The family's identity, in one place: its registry name is its config.json's model_type.
FAMILY_NAME = MODEL_TYPE = "gr00t_n1_5"
ARCHITECTURE = "GR00T_N1_5"

# Eagle 2.5 VL (GR00T N1.5) vision tower: SigLIP so400m-style encoder at 224 px, patch 14 -> 256 tokens.
N15_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
}

# Eagle 2.5 VL language model: Qwen3-1.7B dims (28 layers in the config; GR00T keeps select_layer of them).
N15_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 151680,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "attention_bias": False,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}


@dataclass
class BackboneConfig:
    """The ``backbone_cfg`` block of a GR00T N1.5 checkpoint, plus the Eagle dims it implies."""

    select_layer: int = 12
    project_to_dim: int | None = None  # None for N1.5-3B: features keep the LLM width (2048)
    reproject_vision: bool = False
    vision_config: dict[str, Any] = field(default_factory=lambda: dict(N15_VISION_CONFIG))
    text_config: dict[str, Any] = field(default_factory=lambda: dict(N15_TEXT_CONFIG))
    image_token_id: int = IMAGE_TOKEN_ID
    # The SigLIP attention-pooling head exists in the reference module but its output is never used.
    # Off by default (its weights are skipped on load); on only to mirror the reference module exactly.
    build_siglip_head: bool = False

    def __post_init__(self) -> None:
        vision, text = "backbone_cfg.eagle_config.vision_config", "backbone_cfg.eagle_config.text_config"
        check_sizes(
            vision,
            self.vision_config,
            (
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_channels",
                "image_size",
                "patch_size",
            ),
        )
        check_divides(vision, self.vision_config, "num_attention_heads", "hidden_size")
        check_sizes(
            text,
            self.text_config,
            (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "head_dim",
            ),
        )
        check_divides(text, self.text_config, "num_key_value_heads", "num_attention_heads")
        if self.project_to_dim is not None:
            check_sizes("backbone_cfg", {"project_to_dim": self.project_to_dim}, ("project_to_dim",))
        layers = self.text_config["num_hidden_layers"]
        if (
            isinstance(self.select_layer, bool)
            or not isinstance(self.select_layer, int)
            or not 1 <= self.select_layer <= layers
        ):
            raise ValueError(f"backbone_cfg.select_layer={self.select_layer} must be in 1..{layers}")
        if self.reproject_vision:
            raise ValueError("backbone_cfg.reproject_vision=true is not supported by GR00T N1.5 (must be false)")
        vision = self.vision_config
        if vision["image_size"] // vision["patch_size"] != 16:
            raise ValueError(
                "vision_config must give a 16x16 patch grid (256 tokens per image); got "
                f"image_size={vision['image_size']}, patch_size={vision['patch_size']}"
            )

    @property
    def feature_dim(self) -> int:
        return self.project_to_dim or self.text_config["hidden_size"]

    @property
    def image_size(self) -> int:
        return self.vision_config["image_size"]

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "BackboneConfig":
        eagle = cfg.get("eagle_config") or {}
        if not isinstance(eagle, dict) or not all(
            isinstance(eagle.get(k, {}), dict) for k in ("vision_config", "text_config")
        ):
            raise ValueError('backbone_cfg.eagle_config: expected {"vision_config": {...}, "text_config": {...}}')
        return cls(
            select_layer=cfg.get("select_layer", 12),
            project_to_dim=cfg.get("project_to_dim"),
            reproject_vision=bool(cfg.get("reproject_vision", False)),
            vision_config={**N15_VISION_CONFIG, **eagle.get("vision_config", {})},
            text_config={**N15_TEXT_CONFIG, **eagle.get("text_config", {})},
            image_token_id=int(eagle.get("image_token_index", IMAGE_TOKEN_ID)),
        )


@dataclass
class ActionHeadConfig:
    """``action_head_cfg`` of a GR00T N1.5 checkpoint (N1.5-3B values as defaults)."""

    action_dim: int = 32
    action_horizon: int = 16
    add_pos_embed: bool = True
    backbone_embedding_dim: int = 2048
    hidden_size: int = 1024
    input_embedding_dim: int = 1536
    max_action_dim: int = 32
    max_state_dim: int = 64
    max_num_embodiments: int = 32
    max_seq_len: int = 1024
    num_inference_timesteps: int = 4
    num_target_vision_tokens: int = 32
    num_timestep_buckets: int = 1000
    noise_beta_alpha: float = 1.5
    noise_beta_beta: float = 1.0
    noise_s: float = 0.999
    use_vlln: bool = True
    dit_layers: int = 16
    dit_heads: int = 32
    dit_head_dim: int = 48
    dit_output_dim: int = 1024
    dit_cross_attention_dim: int = 2048
    vlsa_layers: int = 4
    vlsa_heads: int = 32
    vlsa_head_dim: int = 64

    @classmethod
    def from_dict(cls, cfg: dict) -> "ActionHeadConfig":
        dit, vlsa = cfg.get("diffusion_model_cfg", {}), cfg.get("vl_self_attention_cfg", {})
        plain = {k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg}
        nested = {
            "dit_layers": dit.get("num_layers"),
            "dit_heads": dit.get("num_attention_heads"),
            "dit_head_dim": dit.get("attention_head_dim"),
            "dit_output_dim": dit.get("output_dim"),
            "dit_cross_attention_dim": dit.get("cross_attention_dim"),
            "vlsa_layers": vlsa.get("num_layers"),
            "vlsa_heads": vlsa.get("num_attention_heads"),
            "vlsa_head_dim": vlsa.get("attention_head_dim"),
        }
        config = cls(**plain, **{k: v for k, v in nested.items() if v is not None})
        sizes = [f.name for f in fields(cls) if f.type in ("int", int)]
        check_sizes("action_head_cfg", config.__dict__, sizes)
        if config.dit_heads * config.dit_head_dim != config.input_embedding_dim:
            raise ValueError("action_head_cfg: diffusion heads x head dim must equal input_embedding_dim")
        return config


@dataclass
class GrootConfig:
    """A GR00T N1.5 checkpoint's ``config.json``: the backbone config parsed, the rest kept as written."""

    backbone: BackboneConfig
    action_head: ActionHeadConfig
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "GrootConfig":
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: expected a JSON object")
        if "backbone_cfg" not in raw or "action_head_cfg" not in raw:
            missing = [k for k in ("backbone_cfg", "action_head_cfg") if k not in raw]
            raise ValueError(f"{source}: not a {ARCHITECTURE} config, missing {missing}")
        try:
            return cls(
                backbone=BackboneConfig.from_dict(raw["backbone_cfg"]),
                action_head=ActionHeadConfig.from_dict(raw["action_head_cfg"]),
                raw=copy.deepcopy(raw),
            )
        except (ValueError, TypeError, AttributeError) as err:  # validated before anything is allocated
            raise ValueError(f"{source}: {err}") from None

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim


def n15_3b_config() -> dict[str, Any]:
    """The ``config.json`` of ``nvidia/GR00T-N1.5-3B``, as a fresh dict."""
    block = {"dropout": 0.2, "final_dropout": True, "positional_embeddings": None}
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "action_dim": 32,
        "action_horizon": 16,
        "hidden_size": 2048,
        "model_dtype": "float32",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.3",
        "backbone_cfg": {
            "eagle_path": "NVEagle/eagle_er-qwen3_1_7B-Siglip2_400M_stage1_5_128gpu_er_v7_1mlp_nops",
            "load_bf16": False,
            "project_to_dim": None,
            "reproject_vision": False,
            "select_layer": 12,
            "tune_llm": False,
            "tune_visual": True,
            "use_flash_attention": True,
        },
        "action_head_cfg": {
            "action_dim": 32,
            "action_horizon": 16,
            "add_pos_embed": True,
            "backbone_embedding_dim": 2048,
            "diffusion_model_cfg": {
                "attention_head_dim": 48,
                "cross_attention_dim": 2048,
                "interleave_self_attention": True,
                "norm_type": "ada_norm",
                "num_attention_heads": 32,
                "num_layers": 16,
                "output_dim": 1024,
                **block,
            },
            "hidden_size": 1024,
            "input_embedding_dim": 1536,
            "max_action_dim": 32,
            "max_state_dim": 64,
            "model_dtype": "float32",
            "noise_beta_alpha": 1.5,
            "noise_beta_beta": 1.0,
            "noise_s": 0.999,
            "num_inference_timesteps": 4,
            "num_target_vision_tokens": 32,
            "num_timestep_buckets": 1000,
            "tune_diffusion_model": True,
            "tune_projector": True,
            "use_vlln": True,
            "vl_self_attention_cfg": {"attention_head_dim": 64, "num_attention_heads": 32, "num_layers": 4, **block},
        },
    }
