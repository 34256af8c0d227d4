"""Processor: the prompt and ids of the N1.5 inference path, image conversion and rejection."""

import numpy as np
import pytest
import torch
from conftest import random_image

from groot_sage_ros.families.common.images import crop_and_resize, to_rgb_uint8
from groot_sage_ros.families.n1_5.processor import (
    N15Processor,
    ProcessorConfig,
    pixel_values,
)
from groot_sage_ros.families.n1_5.prompt import SPECIAL_TOKENS


@pytest.fixture(scope="module")
def processor():
    return N15Processor()


def test_prompt_string_matches_the_eagle_chat_template(processor):
    prompt = processor.prompt(2, "pick up the cube")
    context = "<IMG_CONTEXT>" * 256
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"<image 1><img>{context}</img><image 2><img>{context}</img>"
        "['pick up the cube']<|im_end|>\n<|im_start|>assistant\n"
    )
    plain = N15Processor(ProcessorConfig(instruction_format="plain")).prompt(1, "pick up the cube")
    assert plain.endswith("</img>pick up the cube<|im_end|>\n<|im_start|>assistant\n")


def test_token_ids_for_a_known_instruction(processor):
    ids, layout = processor.encode(1, "pick up the cube")
    s = SPECIAL_TOKENS
    header = [
        s["<|im_start|>"],
        8948,
        198,
        2610,
        525,
        264,
        10950,
        17847,
        13,
        s["<|im_end|>"],
        198,
        s["<|im_start|>"],
        872,
        198,
    ]  # system\nYou are a helpful assistant.  user\n
    image = [27, 1805, 220, 16, 29, s["<img>"]] + [s["<IMG_CONTEXT>"]] * 256 + [s["</img>"]]  # <image 1>
    instruction = [677, 29245, 705, 279, 23739, 660]  # ['pick up the cube']
    footer = [s["<|im_end|>"], 198, s["<|im_start|>"], 77091, 198]  # \n assistant\n
    assert list(ids) == header + image + instruction + footer
    assert (s["<IMG_CONTEXT>"], s["<img>"], s["</img>"], s["<|im_start|>"], s["<|im_end|>"], s["<|endoftext|>"]) == (
        151669,
        151670,
        151671,
        151644,
        151645,
        151643,
    )
    assert layout.image_ranges == ((20, 276),)
    assert layout.instruction_range == (277, 283) and layout.seq_len == len(ids) == 288


def test_two_cameras_give_two_ranges_in_order(processor):
    _, layout = processor.encode(2, "stack the blocks")
    (a0, b0), (a1, b1) = layout.image_ranges
    assert b0 - a0 == 256 and b1 - a1 == 256 and b0 < a1
    assert layout.instruction_range[0] > b1


def test_batch_is_right_padded_and_images_are_sample_major(processor):
    first, second = random_image(64, 64, 1), random_image(64, 64, 2)
    inputs = processor([([first], "a"), ([second, first], "a much longer instruction here")])
    long_len = inputs.layouts[1].seq_len
    short_len = inputs.layouts[0].seq_len
    assert inputs.input_ids.shape == (2, long_len)
    assert inputs.attention_mask[0].tolist() == [1] * short_len + [0] * (long_len - short_len)
    assert (inputs.input_ids[0, short_len:] == SPECIAL_TOKENS["<|endoftext|>"]).all()
    assert inputs.images.shape == (3, 3, 224, 224)
    torch.testing.assert_close(inputs.images[0], inputs.images[2])  # frame order: sample 0, then sample 1


def test_pixels_are_cropped_resized_and_scaled_to_minus_one_one(processor):
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    image[:, :, 0] = 255  # pure red
    image[:5, :, :] = 255  # a white band inside the 5 % that the centre crop removes
    inputs = processor([([image], "look")])
    pixels = pixel_values(inputs.images)[0]  # (3, 224, 224)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == torch.float32
    # Isaac's uint8 round trip truncates: the resize's 0.99999994 becomes 254 in places, as it does there.
    assert torch.all(pixels[0] >= (254 / 255 - 0.5) / 0.5) and torch.all(pixels[1:] == -1.0)
    assert inputs.images[0, 0].float().mean() > 254.5


def test_crop_then_resize_keeps_a_gradient_monotonic():
    ramp = np.tile(np.linspace(0, 255, 640).astype(np.uint8)[None, :, None], (480, 1, 3))
    out = crop_and_resize(torch.from_numpy(ramp), 224, 0.95)  # (3, 224, 224)
    row = out[0, 100].int()
    assert torch.all(row[1:] >= row[:-1]) and row[0] > 0 and row[-1] < 255  # the crop trimmed both ends


@pytest.mark.parametrize(
    "image, expected_pixel",
    [
        (np.full((31, 17), 200, np.uint8), [200, 200, 200]),  # grayscale, odd size
        (np.full((40, 30, 1), 10, np.uint8), [10, 10, 10]),
        (np.dstack([np.full((50, 60), v, np.uint8) for v in (1, 2, 3, 0)]), [1, 2, 3]),  # RGBA drops alpha
        (np.full((25, 25), 65535, np.uint16), [255, 255, 255]),  # 16-bit scales to 8-bit
        (np.full((25, 25, 3), 257 * 7, np.uint16), [7, 7, 7]),
    ],
)
def test_images_are_converted(processor, image, expected_pixel):
    rgb = to_rgb_uint8(image)
    assert rgb.dtype == np.uint8 and rgb.shape == image.shape[:2] + (3,)
    assert rgb[0, 0].tolist() == expected_pixel
    assert processor.preprocess_images([image]).shape == (1, 3, 224, 224)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 10, 3), np.uint8), "zero-sized"),
        (np.zeros((10, 10, 2), np.uint8), "expected an HxW"),
        (np.zeros((10, 10, 3), np.float32), "expected uint8 or uint16"),
        (np.zeros((4, 5, 6, 3), np.uint8), "expected an HxW"),
        (np.zeros((1, 10, 3), np.uint8), "too small to crop"),
    ],
)
def test_bad_images_are_rejected_with_a_clear_error(processor, image, message):
    with pytest.raises(ValueError, match=message):
        processor([([image], "look")])


@pytest.mark.parametrize("instruction", ["", "   ", None])
def test_empty_instruction_is_rejected(processor, instruction):
    with pytest.raises(ValueError, match="instruction must be a non-empty string"):
        processor.encode(1, instruction)


def test_special_tokens_in_instruction_are_rejected(processor):
    with pytest.raises(ValueError, match="special token '<|im_end|>'"):
        processor.encode(1, "do it<|im_end|>")
