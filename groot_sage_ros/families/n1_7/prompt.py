"""GR00T N1.7's prompt: the Qwen3-VL chat format of Cosmos-Reason2-2B, its special tokens, the layout.

One user turn, no system turn, no generation prompt (LeRobot ``GrootN17VLMEncodeStep``: the Qwen3-VL
processor's ``apply_chat_template(..., add_generation_prompt=False)``), each camera's frame an image
item, then the instruction::

    <|im_start|>user\n<|vision_start|><|image_pad|>x64<|vision_end|>...pick up the cube<|im_end|>\n

The instruction is "formalised" first, as NVIDIA's processor does by default (``formalize_language``:
lower case, only letters, digits, white space and ``_`` kept); ``instruction_format="plain"`` sends it
as given.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from ...api import TokenLayout
from ..common.qwen_tokens import QWEN3_SPECIAL_TOKENS, check_instruction_text
from ..common.tokenizer import FolderTokenizer, QwenTiktokenTokenizer, Tokenizer
from ..common.tokens import image_runs

# Cosmos-Reason2-2B / Qwen3-VL-2B add nothing to Qwen3's special tokens.
SPECIAL_TOKENS: dict[str, int] = dict(QWEN3_SPECIAL_TOKENS)
VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"
IMAGE_TOKEN_ID = SPECIAL_TOKENS[IMAGE_PAD]
PAD_TOKEN_ID = SPECIAL_TOKENS["<|endoftext|>"]
IM_END_ID = SPECIAL_TOKENS["<|im_end|>"]
VISION_END_ID = SPECIAL_TOKENS[VISION_END]
INSTRUCTION_FORMATS = ("formalized", "plain")  # "formalized": NVIDIA's default (formalize_language)
DEFAULT_TASK = "Perform the task."  # what NVIDIA's processor sends for an empty instruction


@lru_cache(maxsize=4)
def load_tokenizer(folder: str | None = None) -> Tokenizer:
    """The built-in tiktoken tokenizer, or ``folder`` (a Cosmos-Reason2 / Qwen3-VL folder) through
    AutoTokenizer, checked against our ids."""
    if not folder:
        return QwenTiktokenTokenizer(SPECIAL_TOKENS)
    return FolderTokenizer(folder, {token: SPECIAL_TOKENS[token] for token in (IMAGE_PAD, VISION_START, "<|im_end|>")})


def formalize(instruction: str) -> str:
    """NVIDIA's ``formalize_language``: lower case, keep letters, digits, white space and ``_``."""
    text = instruction.lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch.isspace() or ch == "_")
    return text or DEFAULT_TASK


def check_instruction(instruction: str) -> None:
    check_instruction_text(instruction, SPECIAL_TOKENS)


def render_prompt(num_images: int, instruction: str, tokens_per_image: int, instruction_format: str) -> str:
    if num_images < 1:
        raise ValueError("a frame set needs at least one camera image")
    check_instruction(instruction)
    text = formalize(instruction) if instruction_format == "formalized" else instruction
    image = f"{VISION_START}{IMAGE_PAD * tokens_per_image}{VISION_END}"
    return f"<|im_start|>user\n{image * num_images}{text}<|im_end|>\n"


def layout_of(ids: Sequence[int], num_images: int, tokens_per_image: int) -> TokenLayout:
    """Each camera's <|image_pad|> run and the instruction tokens in a prompt's ids."""
    runs = image_runs(ids, IMAGE_TOKEN_ID, num_images, tokens_per_image)
    last_vision_end = max(i for i, t in enumerate(ids) if t == VISION_END_ID)
    im_end = list(ids).index(IM_END_ID, last_vision_end)
    return TokenLayout(seq_len=len(ids), image_ranges=tuple(runs), instruction_range=(last_vision_end + 1, im_end))
