"""A run has an identity: a rerun continues a folder's work only with the same inputs and options, a
finished run asked to resume says so, and identical runs give identical bytes.

Real ``groot-sage`` commands on real bags and the tiny checkpoint; an interrupted extract is a folder whose
manifest was never written (what a run killed before its last step leaves)."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, extract_argv
from safetensors.torch import load_file
from test_data_safety import assert_one_line, cli, run_main

from groot_sage_ros.cli import main
from groot_sage_ros.families.n1_5.tiny import write_tiny_checkpoint
from groot_sage_ros.offline.dataset import FeatureDataset
from groot_sage_ros.offline.make_bag import make_bag
from groot_sage_ros.output_folder import IDENTITY

DISTILL = [*TINY_RUN[2:], "--batch-size", "4"]  # without --max-steps


@pytest.fixture(scope="module")
def bags(small_bag, tmp_path_factory):
    other = tmp_path_factory.mktemp("identity_bags") / "b"
    make_bag(cli("make-bag", "--out", other, "--arc", "--limit", 3, "--instruction", "solve it"))
    return small_bag, other


@pytest.fixture(scope="session")
def finished(small_dataset):
    return small_dataset


def interrupted_copy(finished: Path, where: Path, keep_shards: int = 2) -> Path:
    """The dataset as a run killed after ``keep_shards`` shards leaves it: no manifest, fewer shards."""
    copy = Path(shutil.copytree(finished, where))
    (copy / "manifest.json").unlink()
    for shard in sorted(copy.glob("shard-*.safetensors"))[keep_shards:]:
        shard.unlink()
    return copy


@pytest.mark.parametrize(
    "change, field",
    [
        (["--shard-size", "2"], "shard_size"),
        (["--instruction", "another task"], "instruction"),
        (["--batch-size", "2"], "batch_size"),
        (["--sync-slop-s", "0.2"], "sync_slop_s"),
        (["--dtype", "bfloat16"], "dtype"),
        (["--precision", "int8_weight"], "precision"),
    ],
)
def test_an_interrupted_extract_rerun_with_other_options_is_refused_naming_the_field(
    capsys, bags, finished, tiny_checkpoint, tmp_path, change, field
):
    stopped = interrupted_copy(finished, tmp_path / "ds")
    before = {p.name: p.read_bytes() for p in stopped.iterdir() if p.is_file() and not p.name.startswith(".")}
    code, err = run_main(capsys, *extract_argv(tiny_checkpoint, bags[0], stopped), *change)  # the last value wins
    assert_one_line(code, err, f"{field} was", "--overwrite", "another --out")
    after = {p.name: p.read_bytes() for p in stopped.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert after == before  # nothing added to, or taken from, the other run's shards


def test_an_extract_rerun_on_another_bag_or_teacher_is_refused_and_the_same_one_resumes(
    capsys, bags, finished, tiny_checkpoint, tmp_path
):
    stopped = interrupted_copy(finished, tmp_path / "ds")
    code, err = run_main(capsys, *extract_argv(tiny_checkpoint, bags[1], stopped))
    assert_one_line(code, err, "bags was")
    other_teacher = write_tiny_checkpoint(tmp_path / "other_teacher", seed=1)
    code, err = run_main(capsys, *extract_argv(other_teacher, bags[0], stopped))
    assert_one_line(code, err, "teacher_content_hash was")  # checked after the load, before any shard is written
    assert sorted(p.name for p in stopped.glob("shard-*")) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert run_main(capsys, *extract_argv(tiny_checkpoint, bags[0], stopped))[0] == 0  # the same run: resumes
    resumed, reference = FeatureDataset(stopped, verify="all"), FeatureDataset(finished, verify="all")
    assert resumed.manifest["num_samples"] == reference.manifest["num_samples"]
    assert [s["sha256"] for s in resumed.manifest["shards"]] == [s["sha256"] for s in reference.manifest["shards"]]
    assert resumed.manifest["run"]["teacher_content_hash"] == reference.manifest["teacher"]["content_hash"]


def test_identical_extractions_write_identical_bytes(capsys, bags, finished, tiny_checkpoint, tmp_path):
    assert run_main(capsys, *extract_argv(tiny_checkpoint, bags[0], tmp_path / "again"))[0] == 0
    for shard in sorted(finished.glob("shard-*.safetensors")):
        assert (tmp_path / "again" / shard.name).read_bytes() == shard.read_bytes(), shard.name


def test_a_finished_dataset_is_not_resumed_into(capsys, bags, finished, tiny_checkpoint, tmp_path):
    copy = Path(shutil.copytree(finished, tmp_path / "ds"))
    code, err = run_main(capsys, *extract_argv(tiny_checkpoint, bags[0], copy))
    assert_one_line(code, err, "holds a finished dataset; pass --overwrite")


@pytest.fixture(scope="module")
def distilled(finished, tmp_path_factory):
    """Two runs of 4 steps with --threads 2: one uninterrupted, one whose state is kept at step 2."""
    root = tmp_path_factory.mktemp("identity_runs")
    for name in ("whole", "part"):
        assert (
            main(["distill", str(finished), "--out", str(root / name), "--max-steps", "4", "--threads", "2", *DISTILL])
            == 0
        )
    return root


def stopped_at_step_2(run: Path, where: Path) -> Path:
    copy = Path(shutil.copytree(run, where))
    shutil.copyfile(copy / "step-2.safetensors", copy / "last.safetensors")
    (copy / "student.safetensors").unlink()
    return copy


def test_distill_resume_refuses_other_options_and_reuses_the_runs_thread_count(capsys, finished, distilled, tmp_path):
    part = stopped_at_step_2(distilled / "part", tmp_path / "part")
    assert json.loads((part / IDENTITY).read_text())["threads"] == 2
    for change, field in (
        (["--lr", "1e-3"], "lr"),
        (["--seed", "3"], "seed"),
        (["--threads", "1"], "threads"),
        (["--max-steps", "6"], "max_steps"),
        (["--width", "64"], "width"),
    ):
        argv = ["distill", finished, "--out", part, "--resume", "--max-steps", "4", *DISTILL, *change]
        code, err = run_main(capsys, *argv)
        assert_one_line(code, err, f"{field} was")
    # Resumed without --threads, whatever the machine's load now: the run's 2 threads, and the same weights.
    code, err = run_main(capsys, "distill", finished, "--out", part, "--resume", "--max-steps", "4", *DISTILL)
    assert code == 0, err
    assert "distill: 2 PyTorch thread(s)" in err
    whole, resumed = load_file(distilled / "whole" / "student.safetensors"), load_file(part / "student.safetensors")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole), [
        k for k in whole if not torch.equal(whole[k], resumed[k])
    ]


def test_resuming_a_finished_run_says_so_and_exits_0(capsys, finished, distilled, tmp_path):
    done = Path(shutil.copytree(distilled / "whole", tmp_path / "done"))
    before = hashlib.sha256((done / "last.safetensors").read_bytes()).hexdigest()
    code, err = run_main(
        capsys, "distill", finished, "--out", done, "--resume", "--max-steps", "4", "--threads", "2", *DISTILL
    )
    assert code == 0 and "already finished all 4 steps; nothing to do" in err, err
    assert "Traceback" not in err
    assert hashlib.sha256((done / "last.safetensors").read_bytes()).hexdigest() == before
