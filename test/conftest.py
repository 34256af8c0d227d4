"""Shared fixtures: the tiny checkpoint in the real layout, written once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from groot_sage_ros.families.n1_5.tiny import write_tiny_checkpoint


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


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory) -> Path:
    """The package built with colcon into an install space; returns the package's install prefix."""
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment (make env installs it)")
    tmp = tmp_path_factory.mktemp("colcon")
    src = tmp / "ws" / "src"
    src.mkdir(parents=True)
    (src / "groot_sage_ros").symlink_to(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [str(colcon), "build", "--build-base", str(tmp / "build"), "--install-base", str(tmp / "install")],
        cwd=tmp / "ws", capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return tmp / "install" / "groot_sage_ros"
