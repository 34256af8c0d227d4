"""The flow-matching action head on the tiny checkpoint, normalisation, and the CLI's --actions."""

import json
import subprocess

import numpy as np
import pytest
import torch
from conftest import random_image
from safetensors.torch import load_file, save_file

from groot_sage_ros.checkpoint import CheckpointError
from groot_sage_ros.engine import TeacherEngine
from groot_sage_ros.families.common.normalization import EmbodimentNormalizer, KeyStats
from groot_sage_ros.families.n1_5.action_head import flow_matching_loss
from groot_sage_ros.families.n1_5.statistics import EMBODIMENT_IDS, embodiment_id


@pytest.fixture(scope="module")
def policy(tiny_checkpoint):
    return TeacherEngine.from_pretrained(tiny_checkpoint, device="cpu", dtype="float32", action_head=True)


@pytest.fixture(scope="module")
def features(policy):
    return policy.extract([random_image(80, 100, 1)], "pick up the cube")


def zero_state(policy):
    normalizer = policy.action_policy("new_embodiment").normalizer
    return torch.from_numpy(normalizer.state_vector(normalizer.zero_state(), 64))[None]  # (1, 64)


def test_seeded_chunk_is_deterministic_and_finite(policy, features):
    state = zero_state(policy)
    first = policy.predict_actions(features, state, 31, seed=7)
    again = policy.predict_actions(features, state, 31, seed=7)
    other = policy.predict_actions(features, state, 31, seed=8)
    assert first.shape == (1, 16, 32) and torch.isfinite(first).all()
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_euler_loop_runs_the_configured_buckets(policy, features):
    buckets = []
    encoder = policy.model.action_head.action_encoder  # called once per step with that step's bucket
    handle = encoder.register_forward_hook(lambda m, args, out: buckets.append(args[1].tolist()))
    try:
        policy.predict_actions(features, zero_state(policy), 31, seed=0)
    finally:
        handle.remove()
    assert policy.model.cfg.action_head.num_inference_timesteps == 4
    assert buckets == [[0], [250], [500], [750]]  # one velocity per step


def test_embodiment_state_and_image_reach_the_chunk(policy, features):
    state = zero_state(policy)
    base = policy.predict_actions(features, state, 31, seed=1)
    assert not torch.equal(base, policy.predict_actions(features, state, 24, seed=1))  # another embodiment
    assert not torch.equal(base, policy.predict_actions(features, torch.ones(1, 64), 31, seed=1))
    other = policy.extract([random_image(80, 100, 2)], "pick up the cube")
    assert not torch.equal(base, policy.predict_actions(other, state, 31, seed=1))


def test_training_loss_is_finite_and_differentiable(tiny_checkpoint):
    policy = TeacherEngine.from_pretrained(
        tiny_checkpoint, device="cpu", dtype="float32", action_head=True, warmup=False
    )
    head = policy.model.action_head.requires_grad_(True)
    feats = policy.extract([random_image(32, 32)], "go").features.clone()
    actions = torch.rand(1, 16, 32) * 2 - 1
    mask = torch.zeros(1, 16, 32)
    mask[..., :6] = 1
    torch.manual_seed(0)
    loss = flow_matching_loss(head, feats, torch.zeros(1, 1, 64), actions, mask, torch.tensor([31]))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert head.action_decoder.layer2.W.grad[31].abs().sum() > 0
    assert head.action_decoder.layer2.W.grad[30].abs().sum() == 0  # other embodiments untouched


@pytest.mark.parametrize("mode", ["min_max", "q99", "mean_std"])
def test_normalisation_round_trip(mode):
    stats = {
        "min": np.array([-2.0, 0.0]),
        "max": np.array([2.0, 10.0]),
        "q01": np.array([-1.5, 1.0]),
        "q99": np.array([1.5, 9.0]),
        "mean": np.array([0.5, 5.0]),
        "std": np.array([2.0, 3.0]),
    }
    key = KeyStats("arm", 2, mode, stats)
    x = np.array([[0.7, 3.0], [-1.2, 8.5]])
    y = key.normalize(x)
    np.testing.assert_allclose(key.unnormalize(y), x, atol=1e-12)
    if mode != "mean_std":
        assert np.all(np.abs(y) <= 1)
        assert key.normalize(np.array([100.0, 100.0])).tolist() == [1.0, 1.0]  # clipped to the range
    else:
        np.testing.assert_allclose(y, (x - stats["mean"]) / stats["std"])


def test_state_vector_layout_and_errors(tiny_checkpoint):
    metadata = tiny_checkpoint / "experiment_cfg" / "metadata.json"
    normalizer = EmbodimentNormalizer.from_metadata(metadata, "new_embodiment", embodiment_id)
    assert normalizer.embodiment_id == EMBODIMENT_IDS["new_embodiment"] == 31
    vector = normalizer.state_vector({"single_arm": [1.5] * 5, "gripper": [-1.5]}, 64)
    assert vector.shape == (64,) and vector[:6].tolist() == [1, 1, 1, 1, 1, -1] and not vector[6:].any()
    with pytest.raises(ValueError, match="state key 'gripper' missing"):
        normalizer.state_vector({"single_arm": [0] * 5}, 64)
    with pytest.raises(ValueError, match="no embodiment 'gr1'; the checkpoint has \\['new_embodiment'\\]"):
        EmbodimentNormalizer.from_metadata(metadata, "gr1", embodiment_id)
    with pytest.raises(ValueError, match="normalisation mode 'log'"):
        EmbodimentNormalizer.from_metadata(metadata, "new_embodiment", embodiment_id, {"gripper": "log"})
    chunk = normalizer.split_actions(np.zeros((16, 32)))
    assert {k: v.shape for k, v in chunk.items()} == {"single_arm": (16, 5), "gripper": (16, 1)}


def test_head_is_loaded_strictly(tiny_copy):
    shard = tiny_copy / "model-00002-of-00002.safetensors"
    tensors = load_file(str(shard))
    del tensors["action_head.future_tokens.weight"]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    index_path = tiny_copy / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["action_head.future_tokens.weight"]
    index_path.write_text(json.dumps(index))
    TeacherEngine.from_pretrained(tiny_copy, device="cpu", dtype="float32", warmup=False)  # head off: fine
    with pytest.raises(CheckpointError, match="missing key: action_head.future_tokens.weight"):
        TeacherEngine.from_pretrained(tiny_copy, device="cpu", dtype="float32", warmup=False, action_head=True)


def test_cli_prints_an_unnormalised_chunk(tiny_checkpoint, tmp_path):
    from PIL import Image
    from test_cli import GROOT_SAGE

    Image.fromarray(random_image(60, 80)).save(tmp_path / "cam.png")
    (tmp_path / "state.json").write_text(json.dumps({"single_arm": [0.1, 0.2, 0.3, 0.4, 0.5], "gripper": [1.0]}))
    args = [
        GROOT_SAGE,
        "features",
        "--checkpoint",
        str(tiny_checkpoint),
        "--image",
        str(tmp_path / "cam.png"),
        "--instruction",
        "pick",
        "--dtype",
        "float32",
        "--actions",
        "--embodiment",
        "new_embodiment",
        "--seed",
        "5",
        "--json",
        "--repeat",
        "1",
    ]
    runs = [
        subprocess.run(args + extra, capture_output=True, text=True, timeout=300)
        for extra in ([], [], ["--state", str(tmp_path / "state.json")])
    ]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    reports = [json.loads(r.stdout) for r in runs]
    chunk = reports[0]["action_chunk"]
    assert reports[0]["action_keys"] == {"single_arm": 5, "gripper": 1}
    assert len(chunk) == 16 and all(len(row) == 6 and all(-1 <= v <= 1 for v in row) for row in chunk)
    assert chunk == reports[1]["action_chunk"]  # same seed, same chunk
    assert len(reports[2]["action_chunk"]) == 16  # a state file in robot units is accepted
    bad = subprocess.run(args + ["--embodiment", "gr1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no embodiment 'gr1'" in bad.stderr
