"""Attention transfer: the teacher's last kept layer's attention to the image tokens, recomputed from what
that layer receives (both families), stored by ``extract --attention``, matched by ``distill
--attention-weight``."""

import pytest
import torch
from conftest import random_image

from groot_sage_ros.engine import RuntimeConfig, TeacherEngine
from groot_sage_ros.families.common.attention_maps import attention_probabilities, capture_last_layer_input


@pytest.fixture(scope="module")
def engines(tiny_checkpoint, tmp_path_factory):
    from groot_sage_ros.families.n1_7.tiny import write_tiny_checkpoint

    n17 = write_tiny_checkpoint(tmp_path_factory.mktemp("attention_n17") / "checkpoint")
    runtime = RuntimeConfig(compile="off", cuda_graphs=False)
    loaded = {}
    for family, path in (("gr00t_n1_5", tiny_checkpoint), ("gr00t_n1_7", n17)):
        engine = TeacherEngine.from_pretrained(path, "cpu", "float32", runtime=runtime, warmup=False)
        engine.use_fast_layers()
        loaded[family] = engine
    return loaded


def model_inputs(engine):
    inputs = engine.prepare(
        [([random_image(60, 80, 1)], "stack the red block"), ([random_image(60, 80, 2)], "open the drawer now please")]
    )
    return inputs.input_ids, engine.family.pixel_values(inputs.images), inputs.attention_mask.bool()


@pytest.mark.parametrize("family", ["gr00t_n1_5", "gr00t_n1_7"])
def test_recomputed_weights_are_the_layers_own(engines, family):
    """The weights, applied to the layer's values and output projection, give the layer's attention output."""
    engine = engines[family]
    ids, pixels, _ = model_inputs(engine)
    layers = engine.model.backbone.language_layers
    with torch.no_grad(), capture_last_layer_input(layers, None) as (calls, captured):
        engine.model.features(ids, pixels, calls)
        hidden, cos, sin = captured["hidden"], captured["cos"], captured["sin"]
        probabilities, values = attention_probabilities(layers[-1], hidden, cos, sin)  # (B, H, L, L), (B, H, L, d)
        attention = layers[-1].self_attn
        mixed = (probabilities @ values).transpose(1, 2).reshape(*hidden.shape[:2], -1)  # (B, L, H * d)
        expected = attention(
            hidden_states=layers[-1].input_layernorm(hidden), position_embeddings=(cos, sin), attention_mask=None
        )[0]
        torch.testing.assert_close(attention.o_proj(mixed), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["gr00t_n1_5", "gr00t_n1_7"])
def test_image_attention_from_either_path_with_unchanged_features(engines, family):
    engine = engines[family]
    ids, pixels, mask = model_inputs(engine)
    with torch.no_grad():
        plain = engine.model.features(ids, pixels)
        features, attention = engine.model.features_and_image_attention(ids, pixels)
        fast_features, fast_attention = engine.model.features_and_image_attention(ids, pixels, engine._calls)
    torch.testing.assert_close(features, plain, rtol=0, atol=0)  # capturing changes nothing
    image = ids == engine.model.backbone.image_token_id  # (B, L)
    assert attention.shape == (*ids.shape, int(image[0].sum()))  # (B, L, T)
    first_image = int(image[0].nonzero()[0])
    assert torch.all(attention[:, :first_image] == 0)  # causal: nothing before the image sees it
    assert torch.all(attention.sum(-1) <= 1 + 1e-5) and torch.all(attention[:, first_image:].sum(-1) > 0)
    torch.testing.assert_close(fast_attention, attention, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast_features, features, rtol=1e-4, atol=1e-4)


def test_extract_stores_it_and_distill_matches_it(tiny_checkpoint, tmp_path):
    import json

    from groot_sage_ros.cli import parse_config
    from groot_sage_ros.offline.dataset import FeatureDataset
    from groot_sage_ros.offline.distill import run_distill
    from groot_sage_ros.offline.extract import run_extract
    from groot_sage_ros.offline.make_bag import make_bag

    make_bag(parse_config(["make-bag", "--out", tmp_path / "bag", "--arc", "--limit", 8]))
    common = ["--checkpoint", tiny_checkpoint, "--camera-topics", "/camera/image_raw", "--dtype", "float32"]
    run_extract(parse_config(["extract", tmp_path / "bag", *common, "--out", tmp_path / "plain"]))
    run_extract(parse_config(["extract", tmp_path / "bag", *common, "--out", tmp_path / "with", "--attention"]))
    plain, with_attention = FeatureDataset(tmp_path / "plain"), FeatureDataset(tmp_path / "with")
    assert with_attention.has_attention and not plain.has_attention
    sample, same = with_attention[0], plain[0]
    torch.testing.assert_close(sample["features"], same["features"], rtol=0, atol=0)  # features unchanged
    ids, attention = sample["input_ids"], sample["attention"].float()  # (L,), (L, T)
    image = ids == with_attention.facts.image_token_id
    assert attention.shape == (ids.shape[0], int(image.sum()))
    first_image = int(image.nonzero()[0])
    assert torch.all(attention[:first_image] == 0) and torch.all(attention[first_image:].sum(-1) > 0)
    assert "attention" not in same

    small = ["--width", "64", "--layers", "2", "--heads", "4", "--warmup-steps", "3", "--log-every", "1000"]
    run = ["--max-steps", "40", "--eval-every", "40", "--save-every", "40", "--lr", "2e-3", *small]
    out = tmp_path / "student"
    run_distill(parse_config(["distill", tmp_path / "with", "--out", out, "--attention-weight", "1", *run]))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [line["train_attention_loss"] for line in lines]
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8  # the student's attention moves towards the teacher's
    with pytest.raises(ValueError, match="holds no teacher attention"):
        run_distill(
            parse_config(["distill", tmp_path / "plain", "--out", tmp_path / "s2", "--attention-weight", "1", *run])
        )
