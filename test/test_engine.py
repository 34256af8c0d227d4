"""TeacherEngine on the tiny checkpoint: shapes, layout, batching, dtypes."""

import torch
from conftest import random_image


def test_two_cameras_two_image_ranges_in_camera_order(tiny_engine):
    front, wrist = random_image(480, 640, 1), random_image(240, 320, 2)
    result = tiny_engine.extract([front, wrist], "pick up the cube")
    layout = result.layout
    assert [b - a for a, b in layout.image_ranges] == [256, 256]
    assert layout.image_ranges[0][1] < layout.image_ranges[1][0]
    assert result.features.shape == (1, layout.seq_len, 64)
    # Camera order matters: swapping the cameras changes the image tokens.
    swapped = tiny_engine.extract([wrist, front], "pick up the cube")
    a, b = layout.image_ranges[0]
    assert not torch.allclose(result.features[0, a:b], swapped.features[0, a:b])


def test_image_and_instruction_both_reach_the_features(tiny_engine):
    image = random_image(100, 100, 3)
    base = tiny_engine.extract([image], "pick up the cube").features
    other_image = tiny_engine.extract([random_image(100, 100, 4)], "pick up the cube").features
    other_text = tiny_engine.extract([image], "pick up the ball").features
    assert not torch.allclose(base, other_image)
    assert base.shape == other_text.shape and not torch.allclose(base[0, -8:], other_text[0, -8:])


def test_batched_features_equal_batch_of_one(tiny_engine):
    sets = [([random_image(64, 96, 5)], "go"), ([random_image(80, 80, 6), random_image(50, 70, 7)], "a longer one")]
    batch = tiny_engine.extract_batch(sets)
    for row, (images, instruction) in enumerate(sets):
        single = tiny_engine.extract(images, instruction)
        n = single.layout.seq_len
        assert batch.layouts[row] == single.layout
        assert int(batch.attention_mask[row].sum()) == n
        torch.testing.assert_close(batch.features[row, :n], single.features[0], atol=1e-5, rtol=1e-4)


def test_scatter_places_image_tokens_exactly():
    from groot_sage_ros.families.common.tokens import scatter_image_embeddings

    embeds = torch.zeros(2, 5, 3)
    images = torch.arange(1, 4).float().view(3, 1, 1).expand(3, 1, 3)  # three images of one token each
    mask = torch.tensor([[0, 1, 0, 1, 0], [0, 0, 1, 0, 0]], dtype=torch.bool)
    out = scatter_image_embeddings(embeds, images, mask)
    assert out[:, :, 0].tolist() == [[0, 1, 0, 2, 0], [0, 0, 3, 0, 0]]


def test_layer_loop_equals_transformers_qwen3_forward(tiny_engine):
    from groot_sage_ros.families.n1_5.backbone import run_decoder

    lm = tiny_engine.model.backbone.eagle_model.language_model.model
    embeds = torch.randn(2, 37, lm.config.hidden_size)
    with torch.no_grad():
        reference = lm(inputs_embeds=embeds, use_cache=False).last_hidden_state  # transformers' own forward
        torch.testing.assert_close(run_decoder(lm, embeds), reference, atol=1e-5, rtol=1e-5)
