"""Write random GR00T N1.5 checkpoints in the exact real layout: tiny (demo, tests) or full size (benchmarks).

Same files, schema and key names as ``nvidia/GR00T-N1.5-3B``: ``config.json`` (plus the
``backbone_cfg.eagle_config`` override that carries the tiny SigLIP/Qwen3 dims), two safetensors shards
with ``model.safetensors.index.json``, and ``experiment_cfg/metadata.json``. The backbone is stored in
bfloat16 and the action head in float32, as in the real file. The vocabulary keeps its real size
(151,680) so the real tokenizer's ids are valid.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...checkpoint.write import perturb_norms, random_state, write_shards
from ...output_folder import OutputFolder
from ...owned_files import OutputError, write_json_atomic
from ..common.normalization import example_stats
from .action_head import FlowMatchingActionHead
from .backbone import EagleBackbone
from .config import GrootConfig, n15_3b_config
from .statistics import STATISTICS_FILE

TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}
TINY_SELECT_LAYER = 2


def tiny_config() -> dict:
    cfg = n15_3b_config()
    width = TINY_TEXT["hidden_size"]
    cfg["hidden_size"] = width
    cfg["backbone_cfg"].update(
        select_layer=TINY_SELECT_LAYER,
        eagle_config={"vision_config": dict(TINY_VISION), "text_config": dict(TINY_TEXT)},
    )
    head = cfg["action_head_cfg"]
    head.update(backbone_embedding_dim=width, hidden_size=32, input_embedding_dim=48)
    head["diffusion_model_cfg"].update(
        attention_head_dim=24, num_attention_heads=2, num_layers=4, cross_attention_dim=width, output_dim=32
    )
    head["vl_self_attention_cfg"].update(attention_head_dim=32, num_attention_heads=2, num_layers=2)
    return cfg


def tiny_metadata() -> dict:
    """``experiment_cfg/metadata.json`` for one embodiment, with every statistic kind."""

    keys = {"single_arm": 5, "gripper": 1}  # an SO-100 arm: 5 joints and a gripper
    modality = {k: {"absolute": True, "rotation_type": None, "shape": [w], "continuous": True} for k, w in keys.items()}
    return {
        "new_embodiment": {
            "statistics": {
                "state": {k: example_stats(w, -1.5, 1.5) for k, w in keys.items()},
                "action": {k: example_stats(w, -1.0, 1.0) for k, w in keys.items()},
            },
            "modalities": {
                "video": {"front": {"resolution": [640, 480], "channels": 3, "fps": 30.0}},
                "state": modality,
                "action": modality,
            },
            "embodiment_tag": "new_embodiment",
        }
    }


def write_tiny_checkpoint(out: str | Path, seed: int = 0, outliers: bool = False) -> Path:
    """Write the tiny checkpoint to ``out`` (created if needed) and return its path."""
    return write_random_checkpoint(out, tiny_config(), seed=seed, norm_noise=0.2, outliers=outliers)


def write_random_checkpoint(
    out: str | Path, raw: dict, seed: int = 0, norm_noise: float = 0.0, outliers: bool = False
) -> Path:
    """Random weights for the config dict ``raw`` in the real layout (``n15_3b_config()``: full size, ~7 GB);
    ``outliers`` plants a trained model's outlier channels (``plant_outliers``)."""
    config = GrootConfig.from_dict(raw)  # validates what we are about to write
    folder = OutputFolder.claim(out, "checkpoint", names=("*.json", "*.safetensors"))
    try:
        _write_random_checkpoint(folder.path, raw, config, seed, norm_noise, outliers)
    finally:
        folder.release()
    return folder.path


# Trained LLMs and ViTs carry a few hidden channels of very large magnitude: activations about 20 times the
# rest (LLM.int8's observation), from large norm scales there, and weights reading those channels larger
# than the rest. That is what makes per-token and per-channel quantisation lose accuracy; random weights
# have none of it. How strongly the two align matters for fp8 (benchmarks/archive/README.md has the sweep): with
# weight columns 8x, fp8's per-token activations fail the gate on the tiny checkpoint; at 2x they pass.
OUTLIER_NORM_GAIN = 20.0  # the norm scale on an outlier channel, against about 1 elsewhere
OUTLIER_WEIGHT_GAIN = 2.0  # the input columns of the following Linear layers on those channels
OUTLIER_LAYERS = ("eagle_model.vision_model.vision_model.encoder.layers.", "eagle_model.language_model.model.layers.")


def plant_outliers(state: dict, generator: torch.Generator) -> None:
    """In place: for each hidden width, a few fixed channels (one per 512, at least one) get large norm
    scales in every SigLIP and Qwen3 layer, and the Linear weights that read them large input columns."""
    channels: dict[int, torch.Tensor] = {}
    for name, tensor in state.items():
        if not name.startswith(OUTLIER_LAYERS) or not name.endswith(".weight"):
            continue
        width = tensor.shape[-1]
        if width not in channels:
            channels[width] = torch.randperm(width, generator=generator)[: max(1, width // 512)]
        if tensor.ndim == 1 and "norm" in name and "q_norm" not in name and "k_norm" not in name:
            tensor[channels[width]] *= OUTLIER_NORM_GAIN
        elif tensor.ndim == 2:
            tensor[:, channels[width]] *= OUTLIER_WEIGHT_GAIN


def _write_random_checkpoint(
    out: Path, raw: dict, config: GrootConfig, seed: int, norm_noise: float, outliers: bool
) -> None:
    if (out / "experiment_cfg").is_symlink():
        raise OutputError(f"{out / 'experiment_cfg'}: is a symbolic link; the package never writes through one")
    (out / "experiment_cfg").mkdir(exist_ok=True)
    config.backbone.build_siglip_head = True  # the reference module saves the unused pooling head too
    generator = torch.Generator().manual_seed(seed)

    def backbone_shard() -> dict:
        state = random_state(lambda: EagleBackbone(config.backbone), seed)
        perturb_norms(state, norm_noise, generator)  # informative norms
        if outliers:
            plant_outliers(state, generator)
        return {f"backbone.{k}": v.to(torch.bfloat16).contiguous() for k, v in state.items()}

    def head_shard() -> dict:  # float32, as in the real file
        state = random_state(lambda: FlowMatchingActionHead(config.action_head), seed + 1)
        return {f"action_head.{k}": v.float().contiguous() for k, v in state.items()}

    write_shards(out, [backbone_shard, head_shard])
    write_json_atomic(out / "config.json", raw)
    write_json_atomic(out / STATISTICS_FILE, tiny_metadata())
