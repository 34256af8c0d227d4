"""The special tokens every Qwen3 tokenizer has (Qwen3, Qwen3-VL, Eagle 2.5 on Qwen3): string -> id, id order.

A family's table is this one plus its own additions (N1.5's Eagle image tokens), or this one as it is.
"""

from __future__ import annotations

QWEN3_SPECIAL_TOKENS: dict[str, int] = {
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
}


def check_instruction_text(instruction: str, special_tokens) -> None:
    """ValueError for an empty instruction or one holding one of ``special_tokens`` (prompt injection)."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
    for token in special_tokens:
        if token in instruction:
            raise ValueError(f"instruction contains the special token {token!r}")
