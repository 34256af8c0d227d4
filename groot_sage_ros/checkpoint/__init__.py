"""Checkpoint files: find and read them (``files``), load weights with a family's key plan (``load``),
write random ones in the real layout (``write``). Family-agnostic: the family supplies keys and config."""

from .files import (
    CheckpointError,
    CheckpointFiles,
    content_hash,
    read_checkpoint_files,
    resolve_checkpoint,
)

__all__ = ["CheckpointError", "CheckpointFiles", "content_hash", "read_checkpoint_files", "resolve_checkpoint"]
