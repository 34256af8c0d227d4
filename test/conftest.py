"""Shared fixtures: the tiny checkpoint in the real layout, written once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from groot_sage_ros.tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint")


@pytest.fixture
def tiny_copy(tiny_checkpoint, tmp_path) -> Path:
    """A private copy of the tiny checkpoint that a test may damage."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint"))


@pytest.fixture(scope="session")
def tiny_extractor(tiny_checkpoint):
    from groot_sage_ros.engine import FeatureExtractor

    return FeatureExtractor.from_pretrained(tiny_checkpoint, device="cpu", dtype="float32")


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


class Payload:
    """Unpickling this runs ``touch <marker>``: what a hostile checkpoint file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)
