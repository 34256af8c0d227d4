"""Write random GR00T N1.7 checkpoints in the released layout: tiny (demo, tests) or full size (benchmarks).

Files and key names as LeRobot's ``GR00TN17`` saves and loads them (groot_n1_7.py; the released
nvidia/GR00T-N1.7-3B folder is gated, so its index was not seen): ``config.json`` (flat, model_type
"Gr00tN1d7"), ``model-0000k-of-00002.safetensors`` with ``model.safetensors.index.json`` (backbone, then
action head; the tied ``lm_head`` left out), ``statistics.json``, ``processor_config.json`` and
``embodiment_id.json``. Weights are bfloat16 (model_dtype). The tiny config keeps the real vocabulary
(151,936), patch size, merge, 256 px frames and 64 tokens a frame, the 132-wide state and action and the
40-step horizon; everything else is small (a 8x8 learned position table, so the resampling is exercised).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...checkpoint.write import perturb_norms, random_state, write_shards
from ...output_folder import OutputFolder
from ...owned_files import write_json_atomic
from ..common.normalization import example_stats
from .action_head import N17ActionHead
from .backbone import Qwen3VLBackbone
from .config import GrootN17Config, n17_3b_config
from .statistics import EMBODIMENT_FILE, PROCESSOR_FILE, STATISTICS_FILE

TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rope_scaling": {"mrope_interleaved": True, "mrope_section": [4, 2, 2], "rope_type": "default"},
}
TINY_VISION = {
    "depth": 3,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "num_position_embeddings": 64,
    "out_hidden_size": 64,
    "deepstack_visual_indexes": [0, 2],
}
TINY_SELECT_LAYER = 3
TINY_EMBODIMENT = "new_embodiment"


def tiny_config() -> dict:
    cfg = n17_3b_config()
    cfg.update(
        select_layer=TINY_SELECT_LAYER,
        backbone_embedding_dim=TINY_TEXT["hidden_size"],
        hidden_size=32,
        input_embedding_dim=48,
        qwen3_vl_config={"text_config": dict(TINY_TEXT), "vision_config": dict(TINY_VISION)},
    )
    cfg["diffusion_model_cfg"].update(num_layers=4, num_attention_heads=2, attention_head_dim=24, output_dim=32)
    cfg["vl_self_attention_cfg"].update(num_layers=2, num_attention_heads=2, attention_head_dim=32)
    return cfg


def tiny_sidecars() -> dict[str, dict]:
    """statistics.json, processor_config.json, embodiment_id.json for one SO-100-like embodiment whose arm
    actions are relative to the current joint state (as N1.7's relative-joint embodiments) and whose
    gripper action is absolute."""
    keys = {"single_arm": 5, "gripper": 1}
    action_configs = [
        {"rep": "RELATIVE", "type": "NON_EEF", "format": "DEFAULT", "state_key": "single_arm"},
        {"rep": "ABSOLUTE", "type": "NON_EEF", "format": "DEFAULT", "state_key": None},
    ]
    statistics = {
        "state": {k: example_stats(w, -1.5, 1.5) for k, w in keys.items()},
        "action": {k: example_stats(w, -1.0, 1.0) for k, w in keys.items()},
        "relative_action": {"single_arm": example_stats(5, -0.2, 0.2)},
    }
    modality = {
        "video": {"delta_indices": [0], "modality_keys": ["front"]},
        "state": {"delta_indices": [0], "modality_keys": list(keys)},
        "action": {"delta_indices": list(range(16)), "modality_keys": list(keys), "action_configs": action_configs},
        "language": {"delta_indices": [0], "modality_keys": ["annotation.human.task_description"]},
    }
    processor = {
        "processor_class": "Gr00tN1d7Processor",
        "processor_kwargs": {
            "formalize_language": True,
            "image_crop_size": [230, 230],
            "image_target_size": [256, 256],
            "use_albumentations": False,
            "letter_box_transform": False,
            "max_action_horizon": 40,
            "max_state_dim": 132,
            "max_action_dim": 132,
            "use_percentiles": False,
            "use_relative_action": True,
            "modality_configs": {TINY_EMBODIMENT: modality},
        },
    }
    return {
        STATISTICS_FILE: {TINY_EMBODIMENT: statistics},
        PROCESSOR_FILE: processor,
        EMBODIMENT_FILE: {TINY_EMBODIMENT: 10},
    }


def write_tiny_checkpoint(out: str | Path, seed: int = 0, outliers: bool = False) -> Path:
    return write_random_checkpoint(out, tiny_config(), seed=seed, norm_noise=0.2, outliers=outliers)


def write_random_checkpoint(
    out: str | Path, raw: dict, seed: int = 0, norm_noise: float = 0.0, outliers: bool = False
) -> Path:
    """Random weights for the config dict ``raw`` in the released layout (``n17_3b_config()``: full size)."""
    if outliers:
        raise ValueError("--outliers: this family has no outlier writer (planted channels are an N1.5 feature)")
    config = GrootN17Config.from_dict(raw)  # validates what we are about to write
    names = ("*.json", "*.safetensors")
    folder = OutputFolder.claim(out, "checkpoint", names=names)
    try:
        generator = torch.Generator().manual_seed(seed)

        def backbone_shard() -> dict:
            state = random_state(lambda: Qwen3VLBackbone(config.backbone), seed)
            perturb_norms(state, norm_noise, generator)  # informative norms
            return {f"backbone.{k}": v.to(torch.bfloat16).contiguous() for k, v in state.items()}

        def head_shard() -> dict:
            state = random_state(lambda: N17ActionHead(config.action_head), seed + 1)
            return {f"action_head.{k}": v.to(torch.bfloat16).contiguous() for k, v in state.items()}

        write_shards(folder.path, [backbone_shard, head_shard])
        write_json_atomic(folder.path / "config.json", raw)
        for name, content in tiny_sidecars().items():
            write_json_atomic(folder.path / name, content)
    finally:
        folder.release()
    return folder.path
