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
from ..common.qwen_tokens import QWEN3_SPECIAL_TOKENS, check_instruction_text
from ..common.tokenizer import FolderTokenizer, QwenTiktokenTokenizer, Tokenizer
from ..common.tokens import image_runs

# Eagle 2.5 VL added tokens (Qwen3 specials + image/box markers), id order.
SPECIAL_TOKENS: dict[str, int] = {
    **QWEN3_SPECIAL_TOKENS,
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
    check_instruction_text(instruction, SPECIAL_TOKENS)


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
    runs = image_runs(ids, IMAGE_TOKEN_ID, num_images, tokens_per_image)
    last_img_end = max(i for i, t in enumerate(ids) if t == IMG_END_ID)
    im_end = ids.index(IM_END_ID, last_img_end)
    return TokenLayout(seq_len=len(ids), image_ranges=tuple(runs), instruction_range=(last_img_end + 1, im_end))
