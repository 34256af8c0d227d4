"""The full-size N1.5-3B config builds on the meta device with the documented counts and key names."""

import re

import torch

from groot_sage_ros.families.n1_5.config import GrootConfig, n15_3b_config
from groot_sage_ros.families.n1_5.model import GrootN15


def build_full(siglip_head: bool) -> GrootN15:
    cfg = GrootConfig.from_dict(n15_3b_config())
    cfg.backbone.build_siglip_head = siglip_head
    with torch.device("meta"):
        return GrootN15(cfg)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())  # shared tensors counted once


def test_full_size_backbone_parameter_counts():
    assert count(build_full(siglip_head=True).backbone) == 1_344_716_736
    assert count(build_full(siglip_head=False).backbone) == 1_329_478_384


def test_full_size_backbone_is_on_meta_and_feature_width_is_2048():
    model = build_full(siglip_head=False)
    assert all(p.is_meta for p in model.parameters())
    assert model.cfg.feature_dim == 2048
    assert isinstance(model.backbone.eagle_linear, torch.nn.Identity)


def test_full_size_key_names_and_shapes_match_architecture_doc():
    state = build_full(siglip_head=True).state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    vit = "backbone.eagle_model.vision_model.vision_model."
    llm = "backbone.eagle_model.language_model.model."
    expected = {
        vit + "embeddings.patch_embedding.weight": (1152, 3, 14, 14),
        vit + "embeddings.position_embedding.weight": (256, 1152),
        vit + "encoder.layers.26.self_attn.q_proj.weight": (1152, 1152),
        vit + "encoder.layers.26.mlp.fc1.weight": (4304, 1152),
        vit + "post_layernorm.weight": (1152,),
        vit + "head.probe": (1, 1, 1152),
        vit + "head.attention.in_proj_weight": (3456, 1152),
        "backbone.eagle_model.mlp1.0.weight": (2048, 1152),
        "backbone.eagle_model.mlp1.0.bias": (2048,),
        llm + "embed_tokens.weight": (151680, 2048),
        llm + "layers.11.self_attn.k_proj.weight": (1024, 2048),
        llm + "layers.11.self_attn.q_norm.weight": (128,),
        llm + "layers.11.mlp.gate_proj.weight": (6144, 2048),
        llm + "norm.weight": (2048,),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    vit_layers = {int(m.group(1)) for k in shapes if (m := re.match(re.escape(vit) + r"encoder\.layers\.(\d+)\.", k))}
    llm_layers = {int(m.group(1)) for k in shapes if (m := re.match(re.escape(llm) + r"layers\.(\d+)\.", k))}
    assert vit_layers == set(range(27)) and llm_layers == set(range(12))
    assert not any("eagle_linear" in k or "lm_head" in k or "rotary" in k for k in shapes)
    assert len([k for k in shapes if k.startswith(vit + "head.")]) == 11
    assert len(shapes) == 584  # 899 entries in the file = 584 + lm_head + 314 action-head tensors


def test_projection_is_built_only_when_config_asks():
    raw = n15_3b_config()
    raw["backbone_cfg"]["project_to_dim"] = 1536
    cfg = GrootConfig.from_dict(raw)
    with torch.device("meta"):
        model = GrootN15(cfg)
    assert cfg.feature_dim == 1536
    assert tuple(model.backbone.eagle_linear.weight.shape) == (1536, 2048)


def test_full_size_action_head_counts_and_key_names():
    cfg = GrootConfig.from_dict(n15_3b_config())
    with torch.device("meta"):
        model = GrootN15(cfg, with_action_head=True)
    head = model.action_head
    assert count(head) == 1_068_806_144
    assert count(head.model) == 550_386_688  # the DiT
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("action_head.")}
    assert len(shapes) == 314  # 899 entries in the file = 584 backbone + lm_head + 314
    expected = {
        "action_head.vlln.weight": (2048,),
        "action_head.vl_self_attention.transformer_blocks.3.attn1.to_out.0.weight": (2048, 2048),
        "action_head.vl_self_attention.transformer_blocks.3.ff.net.0.proj.weight": (8192, 2048),
        "action_head.model.timestep_encoder.timestep_embedder.linear_1.weight": (1536, 256),
        "action_head.model.transformer_blocks.0.norm1.linear.weight": (3072, 1536),
        "action_head.model.transformer_blocks.0.attn1.to_k.weight": (1536, 2048),  # even: cross-attention
        "action_head.model.transformer_blocks.1.attn1.to_k.weight": (1536, 1536),  # odd: self-attention
        "action_head.model.transformer_blocks.15.ff.net.2.weight": (1536, 6144),
        "action_head.model.proj_out_1.weight": (3072, 1536),
        "action_head.model.proj_out_2.weight": (1024, 1536),
        "action_head.state_encoder.layer1.W": (32, 64, 1024),
        "action_head.state_encoder.layer2.b": (32, 1536),
        "action_head.action_encoder.W2.W": (32, 3072, 1536),
        "action_head.action_decoder.layer2.W": (32, 1024, 32),
        "action_head.future_tokens.weight": (32, 1536),
        "action_head.position_embedding.weight": (1024, 1536),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    assert not any("norm3" in k or "norm_out" in k or "norm1.norm" in k for k in shapes if ".model." in k)
