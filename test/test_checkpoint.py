"""Checkpoint loading: strict keys and shapes, sharded files, HF cache ids, clear errors."""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import random_image
from safetensors.torch import load_file, save_file

from groot_sage_ros.checkpoint import (
    CheckpointError,
    read_checkpoint_files,
    resolve_checkpoint,
)
from groot_sage_ros.engine import TeacherEngine

SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
EMBED = "backbone.eagle_model.language_model.model.embed_tokens.weight"
LM_HEAD = "backbone.eagle_model.language_model.lm_head.weight"


def edit_shard(root: Path, shard: str, edit) -> None:
    """Apply ``edit(tensors)`` to one shard and keep the index in step with it."""
    tensors = load_file(str(root / shard))
    edit(tensors)
    save_file(tensors, str(root / shard), metadata={"format": "pt"})
    index_path = root / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard}
    index["weight_map"].update({k: shard for k in tensors})
    index_path.write_text(json.dumps(index))


def load(root, **kwargs):
    return TeacherEngine.from_pretrained(root, device="cpu", dtype="float32", warmup=False, **kwargs)


def test_tiny_checkpoint_has_the_real_layout(tiny_checkpoint):
    names = sorted(p.name for p in tiny_checkpoint.iterdir() if not p.name.startswith("."))
    assert names == ["config.json", "experiment_cfg", SHARD1, SHARD2, "model.safetensors.index.json"]
    hidden = sorted(p.name for p in tiny_checkpoint.iterdir() if p.name.startswith("."))
    assert hidden == [".groot-sage-journal.jsonl", ".groot-sage-output.json", ".groot-sage.lock"]  # the folder's own
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["architectures"] == ["GR00T_N1_5"] and config["backbone_cfg"]["project_to_dim"] is None
    assert "new_embodiment" in json.loads((tiny_checkpoint / "experiment_cfg" / "metadata.json").read_text())
    files = read_checkpoint_files(tiny_checkpoint)
    assert {p.name for p in files.shards} == {SHARD1, SHARD2}
    stored = load_file(str(tiny_checkpoint / SHARD1))
    assert stored[EMBED].dtype == torch.bfloat16  # backbone bf16, action head fp32, as in the real file
    assert load_file(str(tiny_checkpoint / SHARD2))["action_head.vlln.weight"].dtype == torch.float32


def test_tiny_round_trip_features(tiny_engine):
    result = tiny_engine.extract([random_image(480, 640)], "pick up the cube")
    layout = result.layout
    assert result.features.shape == (1, layout.seq_len, tiny_engine.feature_dim)
    assert torch.isfinite(result.features).all()
    assert result.attention_mask.shape == (1, layout.seq_len) and bool(result.attention_mask.all())
    assert layout.image_ranges == ((20, 276),)


def test_missing_key_is_named(tiny_copy):
    key = "backbone.eagle_model.mlp1.0.bias"
    edit_shard(tiny_copy, SHARD1, lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match=f"missing key: {key}"):
        load(tiny_copy)


def test_unexpected_key_is_named(tiny_copy):
    key = "backbone.eagle_model.mlp1.1.weight"
    edit_shard(tiny_copy, SHARD1, lambda t: t.update({key: torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=f"unexpected key: {key}"):
        load(tiny_copy)


def test_wrong_shape_is_named(tiny_copy):
    key = "backbone.eagle_model.mlp1.0.weight"
    edit_shard(tiny_copy, SHARD1, lambda t: t.update({key: torch.zeros(3, 3)}))
    with pytest.raises(CheckpointError, match=rf"{key}: checkpoint \(3, 3\)"):
        load(tiny_copy)


def test_truncated_shard_is_named(tiny_copy):
    shard = tiny_copy / SHARD1
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=SHARD1):
        load(tiny_copy)


def test_action_head_weights_are_not_read_when_the_head_is_off(tiny_copy, tiny_engine):
    # Shard 2 holds only action-head tensors: with the head off it must never be opened.
    (tiny_copy / SHARD2).write_bytes(b"\0" * 16)
    engine = load(tiny_copy)
    assert not hasattr(engine.model, "action_head")
    image = random_image(96, 128)
    torch.testing.assert_close(engine.extract([image], "go").features, tiny_engine.extract([image], "go").features)


def test_optional_keys_present_or_absent(tiny_copy, tiny_engine):
    # The tiny file stores the SigLIP pooling head; drop it and store the tied LM head instead of the
    # embedding: both layouts occur in published checkpoints and must load to the same model.
    def edit(tensors):
        for key in [k for k in tensors if ".vision_model.head." in k]:
            del tensors[key]
        tensors[LM_HEAD] = tensors.pop(EMBED)

    edit_shard(tiny_copy, SHARD1, edit)
    image = random_image(64, 64)
    torch.testing.assert_close(
        load(tiny_copy).extract([image], "go").features, tiny_engine.extract([image], "go").features
    )


def test_unknown_dtype_is_named(tiny_checkpoint):
    with pytest.raises(ValueError, match="dtype 'float8' is not supported"):
        load_with_dtype(tiny_checkpoint, "float8")


def load_with_dtype(root, dtype):
    return TeacherEngine.from_pretrained(root, device="cpu", dtype=dtype, warmup=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_named(tiny_checkpoint):
    with pytest.raises(ValueError, match="device 'cuda' requested but CUDA is not available"):
        TeacherEngine.from_pretrained(tiny_checkpoint, device="cuda", warmup=False)


def test_missing_path_and_uncached_repo_id(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="no such directory"):
        resolve_checkpoint(str(tmp_path / "nope" / "deeper" / "x"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint("nvidia/GR00T-N1.5-3B")
    message = str(err.value)
    assert str(tmp_path / "hub" / "models--nvidia--GR00T-N1.5-3B") in message
    assert "hf download nvidia/GR00T-N1.5-3B" in message


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_repo_id_resolves_in_the_local_cache(tiny_checkpoint, tmp_path, monkeypatch, variable):
    hub = tmp_path / "hub"
    repo = hub / "models--nvidia--GR00T-N1.5-3B"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots").mkdir()
    os.symlink(tiny_checkpoint, repo / "snapshots" / "abc123")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv(variable, str(hub if variable == "HF_HUB_CACHE" else tmp_path))
    assert resolve_checkpoint("nvidia/GR00T-N1.5-3B") == repo / "snapshots" / "abc123"
    engine = TeacherEngine.from_pretrained("nvidia/GR00T-N1.5-3B", device="cpu", dtype="float32", warmup=False)
    assert engine.feature_dim == 64


def test_single_file_checkpoint(tiny_copy, tiny_engine):
    tensors = {}
    for shard in (SHARD1, SHARD2):
        tensors.update(load_file(str(tiny_copy / shard)))
        (tiny_copy / shard).unlink()
    (tiny_copy / "model.safetensors.index.json").unlink()
    save_file(tensors, str(tiny_copy / "model.safetensors"))
    image = random_image(64, 80)
    torch.testing.assert_close(
        load(tiny_copy).extract([image], "go").features, tiny_engine.extract([image], "go").features
    )


def test_fp16_and_bf16_load_and_stay_finite(tiny_checkpoint, tiny_engine):
    image = random_image(120, 160)
    reference = tiny_engine.extract([image], "pick").features
    for dtype, torch_dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        features = load_with_dtype(tiny_checkpoint, dtype).extract([image], "pick").features
        assert features.dtype == torch_dtype and torch.isfinite(features).all()
        torch.testing.assert_close(features.float(), reference, atol=0.15, rtol=0.05)
