"""GR00T N1.7's configuration: the ``config.json`` schema and the one home for the model's defaults.

A checkpoint's ``config.json`` is flat (``model_type`` "Gr00tN1d7", LeRobot's ``GR00T_N1_7_DEFAULTS`` and
Isaac-GR00T's ``Gr00tN1d7Config`` name the same fields). It names its backbone (``model_name``,
nvidia/Cosmos-Reason2-2B) but not the backbone's dims: those are Cosmos-Reason2-2B's ``config.json``
(a Qwen3-VL 2B), kept here as the built-in default, as LeRobot hard-codes it. A checkpoint may override
them with ``qwen3_vl_config = {"vision_config": {...}, "text_config": {...}}`` in transformers' field
names (our tiny checkpoints do; released ones do not).

Where the sources differ (Isaac's class defaults say select_layer 12 and 16 DiT layers, LeRobot and the
released config 16 and 32), the checkpoint's own values win; the defaults below are the released ones.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ..common.validation import check_sizes

FAMILY_NAME = "gr00t_n1_7"  # our registry name
MODEL_TYPE = "Gr00tN1d7"  # the config.json's model_type (LeRobot and Isaac-GR00T)
ARCHITECTURES = ("Gr00tN1d7", "GR00TN17")
BACKBONE_MODEL = "nvidia/Cosmos-Reason2-2B"

# nvidia/Cosmos-Reason2-2B's config.json (LeRobot groot_n1_7.py, _cosmos_reason2_qwen3_vl_config).
COSMOS_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "rope_theta": 5000000,
    "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
    "attention_bias": False,
    "attention_dropout": 0.0,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
COSMOS_VISION_CONFIG: dict[str, Any] = {
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_heads": 16,
    "in_channels": 3,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 2304,
    "out_hidden_size": 2048,
    "deepstack_visual_indexes": [5, 11, 17],
    "hidden_act": "gelu_pytorch_tanh",
}


@dataclass
class BackboneConfig:
    """The Qwen3-VL backbone: Cosmos-Reason2-2B's dims, cut to ``select_layer`` text layers."""

    select_layer: int = 16
    image_size: int = 256  # image_target_size: every frame is resized to this square
    crop_fraction: float = 230 / 256  # image_crop_size / image_target_size
    text_config: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(COSMOS_TEXT_CONFIG))
    vision_config: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(COSMOS_VISION_CONFIG))

    def __post_init__(self) -> None:
        text, vision = "qwen3_vl_config.text_config", "qwen3_vl_config.vision_config"
        check_sizes(
            text,
            self.text_config,
            ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"),
        )
        check_sizes(text, self.text_config, ("num_key_value_heads", "head_dim"))
        check_sizes(
            vision,
            self.vision_config,
            ("depth", "hidden_size", "intermediate_size", "num_heads", "patch_size", "spatial_merge_size"),
        )
        check_sizes(vision, self.vision_config, ("temporal_patch_size", "num_position_embeddings", "out_hidden_size"))
        if self.text_config["num_attention_heads"] % self.text_config["num_key_value_heads"]:
            raise ValueError(f"{text}: num_attention_heads is not a multiple of num_key_value_heads")
        if self.vision_config["hidden_size"] % self.vision_config["num_heads"]:
            raise ValueError(f"{vision}: hidden_size is not divisible by num_heads")
        layers = self.text_config["num_hidden_layers"]
        if isinstance(self.select_layer, bool) or not isinstance(self.select_layer, int):
            raise ValueError(f"select_layer: {self.select_layer!r} is not a whole number")
        if not 1 <= self.select_layer <= layers:
            raise ValueError(f"select_layer={self.select_layer} must be in 1..{layers}")
        if self.vision_config["out_hidden_size"] != self.text_config["hidden_size"]:
            raise ValueError(f"{vision}.out_hidden_size must equal {text}.hidden_size")
        deepstack = self.vision_config["deepstack_visual_indexes"]
        if not isinstance(deepstack, list) or any(
            not isinstance(i, int) or not 0 <= i < self.vision_config["depth"] for i in deepstack
        ):
            raise ValueError(f"{vision}.deepstack_visual_indexes: {deepstack!r} are not vision block indices")
        if len(deepstack) > self.select_layer:
            raise ValueError(f"{len(deepstack)} deepstack levels need at least as many text layers (select_layer)")
        side = self.vision_config["num_position_embeddings"] ** 0.5
        if side != int(side):
            raise ValueError(f"{vision}.num_position_embeddings must be a square number")
        unit = self.vision_config["patch_size"] * self.vision_config["spatial_merge_size"]
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size % unit:
            raise ValueError(f"image_target_size {self.image_size} must be a multiple of patch x merge = {unit}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"image crop fraction {self.crop_fraction} must be in (0, 1]")
        section = self.text_config.get("rope_scaling", {}).get("mrope_section", [])
        if sum(section) * 2 != self.text_config["head_dim"]:
            raise ValueError(f"{text}.rope_scaling.mrope_section {section} must sum to head_dim / 2")

    @property
    def feature_dim(self) -> int:
        return self.text_config["hidden_size"]

    @property
    def merged_grid(self) -> int:
        """Image tokens per side of a frame after the 2x2 merge (8 at 256 px)."""
        vision = self.vision_config
        return self.image_size // (vision["patch_size"] * vision["spatial_merge_size"])

    @property
    def tokens_per_image(self) -> int:
        return self.merged_grid**2


@dataclass
class ActionHeadConfig:
    """The action head's fields of a GR00T N1.7 ``config.json`` (released values as defaults)."""

    backbone_embedding_dim: int = 2048
    max_state_dim: int = 132
    max_action_dim: int = 132
    action_horizon: int = 40
    hidden_size: int = 1024
    input_embedding_dim: int = 1536
    state_history_length: int = 1
    add_pos_embed: bool = True
    use_vlln: bool = True
    max_seq_len: int = 1024
    use_alternate_vl_dit: bool = True
    attend_text_every_n_blocks: int = 2
    max_num_embodiments: int = 32
    num_inference_timesteps: int = 4
    num_timestep_buckets: int = 1000
    noise_beta_alpha: float = 1.5
    noise_beta_beta: float = 1.0
    noise_s: float = 0.999
    dit_layers: int = 32
    dit_heads: int = 32
    dit_head_dim: int = 48
    dit_output_dim: int = 1024
    interleave_self_attention: bool = True
    vlsa_layers: int = 4
    vlsa_heads: int = 32
    vlsa_head_dim: int = 64

    SIZES = (
        "backbone_embedding_dim",
        "max_state_dim",
        "max_action_dim",
        "action_horizon",
        "hidden_size",
        "input_embedding_dim",
        "max_seq_len",
        "attend_text_every_n_blocks",
        "max_num_embodiments",
        "num_inference_timesteps",
        "num_timestep_buckets",
        "dit_layers",
        "dit_heads",
        "dit_head_dim",
        "dit_output_dim",
        "vlsa_heads",
        "vlsa_head_dim",
    )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ActionHeadConfig":
        dit, vlsa = raw.get("diffusion_model_cfg") or {}, raw.get("vl_self_attention_cfg") or {}
        if not isinstance(dit, dict) or not isinstance(vlsa, dict):
            raise ValueError("diffusion_model_cfg and vl_self_attention_cfg must be objects")
        plain = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        nested = {
            "dit_layers": dit.get("num_layers"),
            "dit_heads": dit.get("num_attention_heads"),
            "dit_head_dim": dit.get("attention_head_dim"),
            "dit_output_dim": dit.get("output_dim"),
            "interleave_self_attention": dit.get("interleave_self_attention"),
            "vlsa_layers": vlsa.get("num_layers"),
            "vlsa_heads": vlsa.get("num_attention_heads"),
            "vlsa_head_dim": vlsa.get("attention_head_dim"),
        }
        config = cls(**plain, **{k: v for k, v in nested.items() if v is not None})
        check_sizes("config.json", config.__dict__, cls.SIZES)
        if config.state_history_length != 1:
            raise ValueError(f"state_history_length={config.state_history_length}: only 1 is supported")
        if isinstance(config.vlsa_layers, bool) or not isinstance(config.vlsa_layers, int) or config.vlsa_layers < 0:
            raise ValueError(f"vl_self_attention_cfg.num_layers: {config.vlsa_layers!r} is not a count")
        if config.dit_heads * config.dit_head_dim != config.input_embedding_dim:
            raise ValueError("diffusion_model_cfg: heads x head dim must equal input_embedding_dim")
        if config.vlsa_layers and config.vlsa_heads * config.vlsa_head_dim != config.backbone_embedding_dim:
            raise ValueError("vl_self_attention_cfg: heads x head dim must equal backbone_embedding_dim")
        if config.use_alternate_vl_dit and not config.interleave_self_attention:
            raise ValueError("use_alternate_vl_dit needs diffusion_model_cfg.interleave_self_attention=true")
        if config.action_horizon > config.max_seq_len:
            raise ValueError(f"action_horizon={config.action_horizon} exceeds max_seq_len={config.max_seq_len}")
        return config

    def cross_attends(self, block: int) -> str | None:
        """Which VL tokens DiT block ``block`` cross-attends to: "text" (every token but the images'),
        "image", "all", or None for a self-attention block (AlternateVLDiT / DiT in LeRobot's port)."""
        if self.interleave_self_attention and block % 2 == 1:
            return None
        if not self.use_alternate_vl_dit:
            return "all"
        return "text" if block % (2 * self.attend_text_every_n_blocks) == 0 else "image"


@dataclass
class GrootN17Config:
    """A GR00T N1.7 checkpoint's ``config.json``: parsed, the raw dict kept as written."""

    backbone: BackboneConfig
    action_head: ActionHeadConfig
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "GrootN17Config":
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: expected a JSON object")
        try:
            return cls(
                backbone=backbone_from_dict(raw), action_head=ActionHeadConfig.from_dict(raw), raw=copy.deepcopy(raw)
            )
        except (ValueError, TypeError, AttributeError, KeyError) as err:  # validated before anything is allocated
            raise ValueError(f"{source}: {err}") from None

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim


def backbone_from_dict(raw: dict[str, Any]) -> BackboneConfig:
    override = raw.get("qwen3_vl_config") or {}
    if not isinstance(override, dict) or not all(
        isinstance(override.get(k, {}), dict) for k in ("text_config", "vision_config")
    ):
        raise ValueError('qwen3_vl_config: expected {"text_config": {...}, "vision_config": {...}}')
    target = raw.get("image_target_size", [256, 256])
    crop = raw.get("image_crop_size", [230, 230])
    for name, pair in (("image_target_size", target), ("image_crop_size", crop)):
        if not isinstance(pair, list) or len(pair) != 2 or pair[0] != pair[1] or not isinstance(pair[0], int):
            raise ValueError(f"{name}: {pair!r} is not a square size [n, n]")
    config = BackboneConfig(
        select_layer=raw.get("select_layer", 16),
        image_size=target[0],
        crop_fraction=crop[0] / target[0],
        text_config={**copy.deepcopy(COSMOS_TEXT_CONFIG), **override.get("text_config", {})},
        vision_config={**copy.deepcopy(COSMOS_VISION_CONFIG), **override.get("vision_config", {})},
    )
    if raw.get("backbone_embedding_dim", config.feature_dim) != config.feature_dim:
        raise ValueError(
            f"backbone_embedding_dim={raw.get('backbone_embedding_dim')} but the backbone's text hidden size is "
            f"{config.feature_dim}"
        )
    if raw.get("reproject_vision"):
        raise ValueError("reproject_vision=true is not supported by GR00T N1.7 (must be false)")
    return config


def n17_3b_config() -> dict[str, Any]:
    """The ``config.json`` of ``nvidia/GR00T-N1.7-3B`` as LeRobot's ``GR00T_N1_7_DEFAULTS`` mirror it (the
    released file itself is not public without the gated download), as a fresh dict."""
    block = {"positional_embeddings": None, "dropout": 0.2, "final_dropout": True}
    return {
        "architectures": [ARCHITECTURES[0]],
        "model_type": MODEL_TYPE,
        "model_name": BACKBONE_MODEL,
        "backbone_model_type": "qwen",
        "model_dtype": "bfloat16",
        "backbone_embedding_dim": 2048,
        "select_layer": 16,
        "reproject_vision": False,
        "use_flash_attention": False,
        "image_crop_size": [230, 230],
        "image_target_size": [256, 256],
        "formalize_language": True,
        "max_state_dim": 132,
        "max_action_dim": 132,
        "action_horizon": 40,
        "hidden_size": 1024,
        "input_embedding_dim": 1536,
        "state_history_length": 1,
        "add_pos_embed": True,
        "use_vlln": True,
        "max_seq_len": 1024,
        "use_alternate_vl_dit": True,
        "attend_text_every_n_blocks": 2,
        "diffusion_model_cfg": {
            "num_layers": 32,
            "num_attention_heads": 32,
            "attention_head_dim": 48,
            "norm_type": "ada_norm",
            "output_dim": 1024,
            "interleave_self_attention": True,
            **block,
        },
        "vl_self_attention_cfg": {"num_layers": 4, "num_attention_heads": 32, "attention_head_dim": 64, **block},
        "num_inference_timesteps": 4,
        "num_timestep_buckets": 1000,
        "noise_beta_alpha": 1.5,
        "noise_beta_beta": 1.0,
        "noise_s": 0.999,
        "max_num_embodiments": 32,
        "use_relative_action": False,
    }
