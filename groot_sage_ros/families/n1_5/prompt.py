"""GR00T N1.5's prompt: Eagle 2.5 VL's chat template, its special tokens and where things sit in it.

One user turn, images first, then the instruction::

    <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n
    <image 1><img><IMG_CONTEXT>x256</img><image 2><img>...</img>['pick up the cube']<|im_end|>\n
    <|im_start|>assistant\n

The instruction is rendered as Isaac's inference path does (``str([text])``, the repr of a list), which
LeRobot also hard-codes; ``instruction_format="plain"`` sends the bare text instead.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from ...api import TokenLayout
from ..common.tokenizer import FolderTokenizer, QwenTiktokenTokenizer, Tokenizer

# Eagle 2.5 VL added tokens (Qwen3 specials + image/box markers), id order.
SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<|fim_prefix|>": 151659,
    "<|fim_middle|>": 151660,
    "<|fim_suffix|>": 151661,
    "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663,
    "<|file_sep|>": 151664,
    "<tool_response>": 151665,
    "</tool_response>": 151666,
    "<think>": 151667,
    "</think>": 151668,
    "<IMG_CONTEXT>": 151669,
    "<img>": 151670,
    "</img>": 151671,
    "<box>": 151672,
    "</box>": 151673,
    "<quad>": 151674,
    "</quad>": 151675,
    "<ref>": 151676,
    "</ref>": 151677,
    "<interval>": 151678,
    "</interval>": 151679,
}

SYSTEM_PROMPT = "You are a helpful assistant."
IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
IMAGE_TOKEN_ID = SPECIAL_TOKENS[IMG_CONTEXT]
PAD_TOKEN_ID = SPECIAL_TOKENS["<|endoftext|>"]
IM_END_ID = SPECIAL_TOKENS["<|im_end|>"]
IMG_END_ID = SPECIAL_TOKENS[IMG_END]
INSTRUCTION_FORMATS = ("list_repr", "plain")  # "list_repr": Isaac/LeRobot inference


@lru_cache(maxsize=4)
def load_tokenizer(folder: str | None = None) -> Tokenizer:
    """The built-in tiktoken tokenizer, or ``folder`` through AutoTokenizer (checked against our ids)."""
    if not folder:
        return QwenTiktokenTokenizer(SPECIAL_TOKENS)
    return FolderTokenizer(folder, {token: SPECIAL_TOKENS[token] for token in (IMG_CONTEXT, IMG_START, "<|im_end|>")})


def check_instruction(instruction: str) -> None:
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
    for token in SPECIAL_TOKENS:
        if token in instruction:
            raise ValueError(f"instruction contains the special token {token!r}")


def render_prompt(num_images: int, instruction: str, tokens_per_image: int, instruction_format: str) -> str:
    if num_images < 1:
        raise ValueError("a frame set needs at least one camera image")
    check_instruction(instruction)
    text = str([instruction]) if instruction_format == "list_repr" else instruction
    context = IMG_CONTEXT * tokens_per_image
    images = "".join(f"<image {k}>{IMG_START}{context}{IMG_END}" for k in range(1, num_images + 1))
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{images}{text}<|im_end|>\n<|im_start|>assistant\n"
    )


def layout_of(ids: Sequence[int], num_images: int, tokens_per_image: int) -> TokenLayout:
    """Find each camera's <IMG_CONTEXT> run and the instruction tokens in a prompt's ids."""
    runs, start = [], None
    for i, token in enumerate(list(ids) + [-1]):
        if token == IMAGE_TOKEN_ID and start is None:
            start = i
        elif token != IMAGE_TOKEN_ID and start is not None:
            runs.append((start, i))
            start = None
    if len(runs) != num_images or any(end - begin != tokens_per_image for begin, end in runs):
        raise ValueError(f"prompt has image runs {runs}, expected {num_images} of {tokens_per_image} tokens")
    last_img_end = max(i for i, t in enumerate(ids) if t == IMG_END_ID)
    im_end = ids.index(IM_END_ID, last_img_end)
    return TokenLayout(seq_len=len(ids), image_ranges=tuple(runs), instruction_range=(last_img_end + 1, im_end))
