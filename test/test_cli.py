"""The installed ``groot-sage`` entry point: tiny-checkpoint and features, output and errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import random_image
from PIL import Image

GROOT_SAGE = shutil.which("groot-sage") or str(Path(sys.executable).with_name("groot-sage"))


def run(*args, timeout=300):
    return subprocess.run([GROOT_SAGE, *args], capture_output=True, text=True, timeout=timeout)


def test_tiny_checkpoint_then_features_json(tmp_path):
    out = run("tiny-checkpoint", "--out", str(tmp_path / "ckpt"))
    assert out.returncode == 0, out.stderr
    Image.fromarray(random_image(120, 160)).save(tmp_path / "front.png")
    Image.fromarray(np.full((60, 80), 40000, np.uint16)).save(tmp_path / "depthish.png")  # 16-bit gray
    out = run(
        "features",
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "--image",
        str(tmp_path / "front.png"),
        "--image",
        str(tmp_path / "depthish.png"),
        "--instruction",
        "pick up the cube",
        "--json",
        "--dtype",
        "float32",
        "--repeat",
        "2",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["features_shape"] == [1, report["layout"]["seq_len"], 64]
    assert report["finite"] is True and report["dtype"] == "float32"
    assert [b - a for a, b in report["layout"]["image_ranges"]] == [256, 256]
    assert report["extract_ms"]["runs"] == 2


def test_features_errors_name_the_input(tmp_path, tiny_checkpoint):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = run(
        "features", "--checkpoint", str(tiny_checkpoint), "--image", str(tmp_path / "broken.jpg"), "--instruction", "go"
    )
    assert out.returncode == 2 and "broken.jpg: not a readable image" in out.stderr
    Image.fromarray(random_image(20, 20)).save(tmp_path / "ok.png")
    out = run(
        "features",
        "--checkpoint",
        str(tiny_checkpoint),
        "--image",
        str(tmp_path / "ok.png"),
        "--instruction",
        "go",
        "--dtype",
        "float64",
    )
    assert out.returncode == 2 and "dtype 'float64' is not supported" in out.stderr


def test_every_subcommand_has_an_example_in_help():
    for command in ("tiny-checkpoint", "features", "bench"):
        out = run(command, "--help")
        assert out.returncode == 0 and "example: groot-sage " + command in out.stdout


def test_bench_reports_timings_as_json(tiny_checkpoint, tmp_path):
    out = run(
        "bench",
        "--checkpoint",
        str(tiny_checkpoint),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--batch",
        "2",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--actions",
        "--out",
        str(tmp_path / "bench.json"),
    )
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["features_shape"][0] == 2 and report["finite"] is True
    assert report["backbone_ms_p95"] >= report["backbone_ms_median"] > 0
    assert report["command"].startswith("groot-sage bench")
    assert report["action_horizon"] == 16 and report["actions_finite"] is True
    assert report["full_ms_median"] > 0 and report["action_head_ms_median"] > 0  # timings only: no relation asserted


def test_every_option_of_every_subcommand_has_help_and_says_its_default():
    import argparse

    from groot_sage_ros.cli import build_parser

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, parser in subcommands.choices.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            has_default = action.option_strings and not action.required and action.default not in (None, False, "")
            if not action.help or (has_default and "default" not in action.help):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_the_console_scripts_keep_transformers_optional_extras_out(tmp_path, tiny_checkpoint):
    """SciPy and scikit-learn, imported by transformers whenever installed (1-1.5 s of a start), stay out of
    the processes the console scripts start; a plain ``import groot_sage_ros.cli`` shows they would load."""
    fakes, marker = tmp_path / "site", tmp_path / "imported.txt"
    for name in ("scipy", "sklearn"):
        (fakes / name).mkdir(parents=True)
        (fakes / name / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('{name} ')\n")
    (fakes / "scipy" / "optimize.py").write_text("def linear_sum_assignment(cost):\n    raise NotImplementedError\n")
    env = {**os.environ, "PYTHONPATH": str(fakes)}
    control = subprocess.run([sys.executable, "-c", "import groot_sage_ros.cli"], env=env, capture_output=True)
    assert control.returncode == 0 and marker.read_text().strip(), "transformers no longer imports SciPy"
    marker.unlink()
    Image.fromarray(random_image(40, 40)).save(tmp_path / "front.png")
    out = subprocess.run(
        [GROOT_SAGE, "features", "--checkpoint", str(tiny_checkpoint), "--image", str(tmp_path / "front.png")]
        + ["--instruction", "go", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["finite"] is True
    assert not marker.exists(), marker.read_text()
