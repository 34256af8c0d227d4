"""The package never follows a link and never claims a name it did not create.

At each name the package writes in a folder (its lock, marker, journal, identity, a dataset's manifest and
shards), a symbolic link, a FIFO and a file of someone else's are refused with one line naming them, and
left as they were. Names that merely look like the package's temporaries are a user's. A run that fails
before writing anything leaves no folder it created. Real commands on real files throughout."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_RUN, extract_argv
from test_data_safety import ENV, assert_one_line, run_main

from groot_sage_ros.cli import main
from groot_sage_ros.output_folder import IDENTITY, LOCK, MARKER
from groot_sage_ros.owned_files import JOURNAL, Journal


@pytest.fixture(scope="session")
def bag(small_bag):
    return small_bag


@pytest.fixture(scope="session")
def finished(small_dataset):
    return small_dataset


def unfinished(finished: Path, where: Path) -> Path:
    """A dataset folder as a run stopped before its first shard leaves it: marker, journal, identity, lock."""
    copy = Path(shutil.copytree(finished, where))
    journal = Journal(copy)
    for name in ["manifest.json", *sorted(p.name for p in copy.glob("shard-*"))]:
        journal.record("gone", name)  # as the package records a file it removes
        (copy / name).unlink()
    return copy


def plant(path: Path, intruder: str, target: Path) -> None:
    """A symbolic link to ``target``, a FIFO, or someone else's file, at ``path``."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if intruder == "symlink":
        path.symlink_to(target)
    elif intruder == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("someone else's file\n")


NAMES = (LOCK, MARKER, JOURNAL, IDENTITY, "manifest.json", "shard-00000.safetensors")


@pytest.mark.parametrize("intruder", ["symlink", "fifo", "foreign"])
@pytest.mark.parametrize("name", NAMES)
def test_a_link_fifo_or_foreign_file_at_a_name_the_package_writes_is_refused(
    capsys, bag, finished, tiny_checkpoint, tmp_path, name, intruder
):
    folder = unfinished(finished, tmp_path / "ds")
    target = tmp_path / "notes.txt"
    target.write_text("my notes\n")
    plant(folder / name, intruder, target)
    code, err = run_main(capsys, *extract_argv(tiny_checkpoint, bag, folder))
    fragment = name if intruder != "foreign" or name != MARKER else "is not a marker this package wrote"
    assert_one_line(code, err, fragment)
    assert target.read_text() == "my notes\n"  # never written through the link
    assert [p.name for p in folder.glob("shard-*.safetensors") if p.name != name] == []  # nothing computed or written
    if intruder == "foreign":
        assert (folder / name).read_text() == "someone else's file\n"
    elif intruder == "symlink":
        assert (folder / name).is_symlink()


def test_a_lock_that_is_a_symlink_is_not_followed_by_make_bag(capsys, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    out = tmp_path / "D"
    out.mkdir()
    (out / LOCK).symlink_to(notes)
    code, err = run_main(capsys, "make-bag", "--out", out, "--arc", "--limit", 1)
    assert_one_line(code, err, LOCK, "symbolic link")
    assert notes.read_text() == "my notes\n" and sorted(p.name for p in out.iterdir()) == [LOCK]


def test_names_that_look_like_temporaries_are_a_users(capsys, bag, finished, tiny_checkpoint, tmp_path):
    # A user's folder whose only entry is named like a staging folder of ours: foreign, left whole.
    users = tmp_path / "D"
    (users / ".photos.2024-deadbeef.tmp").mkdir(parents=True)
    (users / ".photos.2024-deadbeef.tmp" / "photo.jpg").write_bytes(b"jpeg")
    code, err = run_main(capsys, "make-bag", "--out", users, "--arc", "--limit", 1)
    assert_one_line(code, err, "holds files this package did not write", ".photos.2024-deadbeef.tmp")
    assert (users / ".photos.2024-deadbeef.tmp" / "photo.jpg").read_bytes() == b"jpeg"
    assert sorted(p.name for p in users.iterdir()) == [".photos.2024-deadbeef.tmp"]

    # In a dataset of ours, --overwrite replaces the dataset and keeps a user's file of the same name form.
    ours = Path(shutil.copytree(finished, tmp_path / "ours"))
    (ours / ".notes.123-deadbeef.tmp").write_text("keep me")
    (ours / "shard-00099.safetensors").write_text("not ours either")  # named like a shard: refused, not taken
    code, err = run_main(capsys, *extract_argv(tiny_checkpoint, bag, ours, "--overwrite"))
    assert_one_line(code, err, "shard-00099.safetensors: a file this package did not write")
    assert (ours / "shard-00099.safetensors").read_text() == "not ours either"
    (ours / "shard-00099.safetensors").unlink()
    assert run_main(capsys, *extract_argv(tiny_checkpoint, bag, ours, "--overwrite"))[0] == 0
    assert (ours / ".notes.123-deadbeef.tmp").read_text() == "keep me"
    assert json.loads((ours / "manifest.json").read_text())["num_samples"] > 0


def test_a_crashed_runs_journaled_temporaries_are_cleared_and_nothing_else(
    capsys, bag, finished, tiny_checkpoint, tmp_path
):
    folder = unfinished(finished, tmp_path / "ds")
    dead = folder / ".shard-00000.safetensors.999999-0a1b2c3d.tmp"
    Journal(folder).record("temp", dead.name)  # a run killed while writing a shard
    dead.write_bytes(b"half a shard")
    lookalike = folder / ".shard-00001.safetensors.999999-0a1b2c3e.tmp"  # never journaled: not ours
    lookalike.write_bytes(b"someone's")
    assert run_main(capsys, *extract_argv(tiny_checkpoint, bag, folder))[0] == 0
    assert not dead.exists() and lookalike.read_bytes() == b"someone's"


def test_a_run_that_fails_before_writing_removes_only_the_folders_it_created(capsys, bag, tiny_checkpoint, tmp_path):
    new = tmp_path / "new" / "deeper" / "ds"
    code, err = run_main(capsys, *extract_argv(tiny_checkpoint, bag, new, "--precision", "fp8"))
    assert_one_line(code, err, "fp8")
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "empty"
    existing.mkdir()
    code, err = run_main(capsys, *extract_argv(tiny_checkpoint, bag, existing, "--precision", "fp8"))
    assert code == 2 and existing.is_dir() and list(existing.iterdir()) == []  # the user's folder stays, empty


def test_an_out_path_that_is_not_utf8_works(tmp_path):
    out = os.fsencode(tmp_path) + b"/bag\xff"
    done = subprocess.run(
        [sys.executable, "-m", "groot_sage_ros.cli", "make-bag", "--out", out, "--arc", "--limit", "1"],
        capture_output=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stderr and b"codec" not in done.stderr
    assert os.path.isfile(out + b"/metadata.yaml")


RUN = [*TINY_RUN, "--threads", "1"]


@pytest.fixture(scope="module")
def run(finished, tmp_path_factory):
    out = tmp_path_factory.mktemp("names_run") / "run"
    assert main(["distill", str(finished), "--out", str(out), *RUN]) == 0
    return out


@pytest.mark.parametrize(
    "name, intruder",
    [
        ("last.safetensors", "symlink"),
        ("metrics.jsonl", "fifo"),
        ("student.safetensors", "foreign"),
        ("loss.png", "symlink"),
        ("step-4.safetensors", "foreign"),
        ("timing.json", "fifo"),
    ],
)
def test_a_run_folder_with_a_link_fifo_or_foreign_file_is_refused_before_training(
    capsys, finished, run, tmp_path, name, intruder
):
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    shutil.copyfile(copy / "step-2.safetensors", copy / "last.safetensors")  # killed after step 2
    for later in ("student.safetensors", "step-4.safetensors", "timing.json"):
        Journal(copy).record("gone", later)
        (copy / later).unlink()
    target = tmp_path / "notes.txt"
    target.write_text("my notes\n")
    plant(copy / name, intruder, target)
    code, err = run_main(capsys, "distill", finished, "--out", copy, "--resume", *RUN)
    assert_one_line(code, err, str(copy / name))
    assert target.read_text() == "my notes\n" and "step" not in err.split(":")[0]
    assert not (copy / "student.safetensors").exists() or name == "student.safetensors"


def test_a_journal_naming_a_users_folder_as_a_temporary_deletes_nothing(
    capsys, bag, finished, tiny_checkpoint, tmp_path
):
    folder = unfinished(finished, tmp_path / "ds")  # a folder shared with its hidden files, say
    Journal(folder).record("temp", "photos")  # a journal that claims a user's folder
    (folder / "photos").mkdir()
    (folder / "photos" / "a.jpg").write_bytes(b"jpeg")
    assert run_main(capsys, *extract_argv(tiny_checkpoint, bag, folder))[0] == 0
    assert (folder / "photos" / "a.jpg").read_bytes() == b"jpeg"


def test_a_report_path_never_replaces_an_output_of_the_package(capsys, finished, run, tmp_path):
    manifest = (finished / "manifest.json").read_bytes()
    code, err = run_main(
        capsys,
        "evaluate",
        "--student",
        run,
        "--dataset",
        finished,
        "--json",
        finished / "manifest.json",
        "--report-dir",
        tmp_path / "report",
    )
    assert_one_line(code, err, "manifest.json: is in an output folder of this package and already exists")
    assert (finished / "manifest.json").read_bytes() == manifest
    assert (
        run_main(
            capsys,
            "evaluate",
            "--student",
            run,
            "--dataset",
            finished,
            "--json",
            run / "eval.json",
            "--report-dir",
            tmp_path / "report2",
        )[0]
        == 0
    )  # a new name beside the run's files: fine
    assert json.loads((run / "eval.json").read_text())["student"]["samples"] > 0
    (run / "eval.json").unlink()


def test_a_lock_or_journal_hard_linked_to_a_users_file_is_not_written_through(capsys, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("")  # empty: it would pass for a lock file of ours, but for the link
    out = tmp_path / "D"
    out.mkdir()
    os.link(notes, out / LOCK)
    code, err = run_main(capsys, "make-bag", "--out", out, "--arc", "--limit", 1)
    assert_one_line(code, err, LOCK, "hard link")
    assert notes.read_text() == ""


def test_a_tokenizer_folder_that_asks_for_its_own_code_is_refused_in_one_line(capsys, bag, tiny_checkpoint, tmp_path):
    folder = tmp_path / "eagle_processor"
    folder.mkdir()
    (folder / "processor_config.json").write_text(json.dumps({"auto_map": {"AutoProcessor": "processing_x.XProc"}}))
    marker = tmp_path / "code_ran"
    (folder / "processing_x.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    argv = extract_argv(tiny_checkpoint, bag, tmp_path / "ds", "--tokenizer", folder, "--instruction", "pick")
    code, err = run_main(capsys, *argv)
    assert_one_line(code, err, "processor_config.json: asks for code from the folder")
    assert not marker.exists() and not (tmp_path / "ds").exists()
