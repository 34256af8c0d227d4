"""Engines: ``load_engine`` is the one entry point; what it returns serves ``api.FeatureEngine``.

engine = load_engine("ckpt/")                         # a GR00T checkpoint: the family from its config.json
engine = load_engine("run/student.safetensors")       # a distilled student (or its run folder)
"""

from __future__ import annotations

from pathlib import Path

from ..api import FeatureEngine
from ..fastpath.precision import PRECISIONS
from ..fastpath.precision import check_supported as check_precision
from .runtime import RuntimeConfig, parse_dtype, resolve_device
from .teacher import TeacherEngine

__all__ = [
    "PRECISIONS",
    "TeacherEngine",
    "RuntimeConfig",
    "check_precision",
    "is_student",
    "load_action_head",
    "load_engine",
    "load_processor",
    "random_engine",
    "parse_dtype",
    "resolve_device",
]


STUDENT_SUFFIXES = (".safetensors", ".pt", ".pth", ".pkl", ".bin")  # the pickles are refused by name


def is_student(path: str | Path) -> bool:
    """A student file, or a distill run folder (a student file, no config.json); else a teacher checkpoint."""
    from ..student.checkpoint import STUDENT_FILE

    path = Path(path).expanduser()
    if path.is_dir():
        return (path / STUDENT_FILE).is_file() and not (path / "config.json").is_file()
    return path.is_file() or path.suffix in STUDENT_SUFFIXES


def load_engine(
    checkpoint: str | Path,
    device: str = "cuda",
    dtype: str = "float16",
    *,
    action_head: bool = False,
    tokenizer: str | None = None,
    instruction_format: str | None = None,
    runtime: RuntimeConfig | None = None,
    warmup: bool = True,
) -> FeatureEngine:
    """A teacher from a checkpoint folder or cached repo id (its family detected from ``config.json``), or
    the student a ``distill`` run wrote. Errors name the file and what was expected."""
    if is_student(checkpoint):
        from ..student.engine import StudentEngine

        if action_head:
            raise ValueError(f"{checkpoint}: a student checkpoint has no action head")
        return StudentEngine.from_checkpoint(checkpoint, device=device, dtype=dtype, runtime=runtime)
    return TeacherEngine.from_pretrained(
        checkpoint,
        device=device,
        dtype=dtype,
        tokenizer=tokenizer,
        instruction_format=instruction_format,
        action_head=action_head,
        runtime=runtime,
        warmup=warmup,
    )


def load_processor(checkpoint: str | Path, tokenizer: str | None = None, instruction_format: str | None = None):
    """A teacher checkpoint's processor alone (its family from ``config.json``; no weights read): checks an
    instruction or a prompt before a model is loaded."""
    from ..checkpoint import read_checkpoint_files
    from ..families import detect

    files = read_checkpoint_files(checkpoint)
    family = detect(files.raw_config, str(files.root / "config.json"))
    return family.processor(tokenizer=tokenizer, instruction_format=instruction_format, root=files.root)


def load_action_head(
    checkpoint: str | Path,
    device: str = "cuda",
    dtype: str = "float16",
    *,
    runtime: RuntimeConfig | None = None,
    warmup: bool = True,
) -> TeacherEngine:
    """A teacher checkpoint's action head without its backbone: ``action_policy`` and ``predict_actions`` on
    features from another engine (a student serves the teacher's width and token layout)."""
    return TeacherEngine.from_pretrained(
        checkpoint, device=device, dtype=dtype, action_head=True, backbone=False, runtime=runtime, warmup=warmup
    )


def random_engine(
    family: str,
    device: str = "cuda",
    dtype: str = "float16",
    *,
    action_head: bool = False,
    runtime: RuntimeConfig | None = None,
    seed: int = 0,
) -> FeatureEngine:
    """Random weights in the shapes of ``family``'s released checkpoint (benchmarks: no files needed)."""
    from ..families import by_name

    raw = by_name(family, "family").full_size_config()
    return TeacherEngine.from_random(
        raw, device=device, dtype=dtype, seed=seed, action_head=action_head, runtime=runtime
    )
