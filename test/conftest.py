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

CAMERA = "/camera/image_raw"
# A tiny-teacher extract in batches of 3 into shards of 4 (several shards from a few ARC tasks).
TINY_EXTRACT = "--dtype float32 --batch-size 3 --shard-size 4".split()


def extract_argv(checkpoint, bags, out, *extra) -> list:
    """``groot-sage extract`` of ``bags`` (one or a list) on the camera topic, with ``TINY_EXTRACT``."""
    bags = bags if isinstance(bags, (list, tuple)) else [bags]
    return [
        "extract",
        *bags,
        "--checkpoint",
        checkpoint,
        "--camera-topics",
        CAMERA,
        "--out",
        out,
        *TINY_EXTRACT,
        *extra,
    ]


# A 4-step distill of a tiny student, saving at step 2: what the data-safety tests resume and refuse.
TINY_RUN = "--max-steps 4 --save-every 2 --width 32 --layers 1 --heads 2 --warmup-steps 1 --eval-every 2".split()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint")


@pytest.fixture(scope="session")
def small_bag(tmp_path_factory) -> Path:
    """Three ARC tasks (12 frames) on /camera/image_raw, with their instruction."""
    from groot_sage_ros.cli import parse_config
    from groot_sage_ros.offline.make_bag import make_bag

    path = tmp_path_factory.mktemp("small_bag") / "bag"
    make_bag(parse_config(["make-bag", "--out", path, "--arc", "--limit", "3"]))
    return path


@pytest.fixture(scope="session")
def small_dataset(small_bag, tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny teacher's dataset of ``small_bag`` (3 shards of 4, batches of 3) and, beside it, the bag
    ``features_bag`` with its features topic. Tests work on copies."""
    from groot_sage_ros.cli import main

    out = tmp_path_factory.mktemp("small_dataset") / "ds"
    argv = extract_argv(tiny_checkpoint, small_bag, out, "--out-bag", out.parent / "features_bag")
    assert main([str(a) for a in argv]) == 0
    return out


@pytest.fixture
def tiny_copy(tiny_checkpoint, tmp_path) -> Path:
    """A private copy of the tiny checkpoint that a test may damage."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_checkpoint):
    from groot_sage_ros.engine import TeacherEngine

    return TeacherEngine.from_pretrained(tiny_checkpoint, device="cpu", dtype="float32")


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
        cwd=tmp / "ws",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return tmp / "install" / "groot_sage_ros"
