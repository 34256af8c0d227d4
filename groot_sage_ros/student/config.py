"""The SAGE student's configuration: its shape, the teacher it learned from and that teacher's token facts."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..api import TokenFacts
from ..families.common.validation import check_sizes

# Ceilings on a student's shape, checked before anything is allocated (a checkpoint's config is user input).
STUDENT_CEILINGS = {
    "teacher_dim": 16384,
    "width": 4096,
    "layers": 64,
    "heads": 64,
    "mlp_ratio": 16,
    "patch_size": 64,
    "image_size": 1024,
    "max_len": 32768,
}
STUDENT_MAX_VOCAB = 262144
STUDENT_MAX_PARAMETERS = 2_000_000_000  # 8 GB in float32


@dataclass
class StudentConfig:
    """The SAGE student's shape; stored in its checkpoint with the vocabulary and feature statistics.

    Validated on construction: whole numbers within ``STUDENT_CEILINGS``, heads dividing the width, the
    vocabulary a sorted list of distinct token ids, at most ``STUDENT_MAX_PARAMETERS`` parameters."""

    teacher_dim: int
    vocab: list[int]  # teacher token ids the data uses (sorted); anything else maps to one unknown row
    tokens: dict  # the teacher family's TokenFacts (api.py), as recorded in the dataset
    patch_size: int  # image_size / patch_size must be the teacher's patch grid: one token per image token
    image_size: int  # the teacher's frame side (the same preprocessed frames)
    width: int = 512
    layers: int = 8
    heads: int = 8
    mlp_ratio: int = 4
    max_len: int = 2048
    teacher_checkpoint: str = ""
    teacher_content_hash: str | None = None
    tokenizer: str = "qwen-tiktoken"

    def __post_init__(self) -> None:
        for name, ceiling in STUDENT_CEILINGS.items():
            check_sizes("student config", self.__dict__, (name,), ceiling)
        vocab = self.vocab
        if (
            not isinstance(vocab, list)
            or not 1 <= len(vocab) <= STUDENT_MAX_VOCAB
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 for v in vocab)
            or any(a >= b for a, b in zip(vocab, vocab[1:]))
        ):
            raise ValueError(
                f"student config.vocab: expected a sorted list of 1..{STUDENT_MAX_VOCAB} distinct token "
                "ids in 0..2**31-1"
            )
        for name in ("teacher_checkpoint", "tokenizer"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"student config.{name}: {getattr(self, name)!r} is not a string")
        if self.teacher_content_hash is not None and not isinstance(self.teacher_content_hash, str):
            raise ValueError(f"student config.teacher_content_hash: {self.teacher_content_hash!r} is not a string")
        facts = self.facts  # validates the record
        grid = self.image_size // self.patch_size
        if self.image_size % self.patch_size or (grid, grid) != facts.patch_grid or self.image_size != facts.image_size:
            raise ValueError(
                f"student patch grid {grid}x{grid} of {self.image_size} px frames does not match the "
                f"teacher's {facts.patch_grid[0]}x{facts.patch_grid[1]} image tokens of {facts.image_size} px "
                f"(patch_size={self.patch_size})"
            )
        if self.width % self.heads:
            raise ValueError(f"student width {self.width} is not divisible by heads {self.heads}")
        if self.parameters > STUDENT_MAX_PARAMETERS:
            raise ValueError(
                f"student config: {self.parameters:,} parameters exceed the ceiling {STUDENT_MAX_PARAMETERS:,}"
            )

    @property
    def facts(self) -> TokenFacts:
        return TokenFacts.from_dict(self.tokens, "student config.tokens")

    @property
    def parameters(self) -> int:
        """Parameter count (weights; biases and norms add well under 1%)."""
        w = self.width
        return (
            self.layers * (4 + 2 * self.mlp_ratio) * w * w
            + (self.max_len + len(self.vocab) + 1) * w
            + 3 * self.patch_size**2 * w
            + w * self.teacher_dim
        )

    @classmethod
    def for_teacher(cls, facts: TokenFacts, teacher_dim: int, vocab: list[int], **shape) -> "StudentConfig":
        """A student for a teacher of ``facts``: its frames, one patch per image token."""
        return cls(
            teacher_dim=teacher_dim,
            vocab=vocab,
            tokens=facts.to_dict(),
            image_size=facts.image_size,
            patch_size=facts.image_size // facts.patch_grid[0],
            **shape,
        )

    @classmethod
    def from_dict(cls, raw) -> "StudentConfig":
        """From a checkpoint's JSON; ValueError naming an unknown, missing or invalid field."""
        if not isinstance(raw, dict):
            raise ValueError(f"student config: expected a JSON object, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"student config: unknown fields {unknown}")
        try:
            return cls(**raw)
        except TypeError as err:
            raise ValueError(f"student config: {err}") from None
