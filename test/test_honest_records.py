"""Checkpoints and datasets that cannot lie, skips that are always counted, instructions that are always
checked, and an evaluate that refuses what it cannot vouch for. Real commands on real files."""

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import CAMERA, TINY_RUN, extract_argv
from safetensors import safe_open
from safetensors.torch import save_file
from test_data_safety import assert_one_line, run_main

from groot_sage_ros.cli import main
from groot_sage_ros.offline.bags import CameraFrame, read_raw, typestore, write_camera_bag
from groot_sage_ros.offline.dataset import FeatureDataset, Sample, shard_name, write_shard

RUN = [*TINY_RUN, "--threads", "1"]


@pytest.fixture(scope="session")
def bag(small_bag):
    return small_bag


@pytest.fixture(scope="session")
def dataset(small_dataset):
    return small_dataset


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("records_run") / "run"
    assert main(["distill", str(dataset), "--out", str(out), *RUN]) == 0
    return out


def rewrite(path: Path, change) -> None:
    """Rewrite a safetensors file with ``change(tensors, metadata)`` applied: what a hand-edited file holds."""
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = dict(handle.metadata())
    change(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)


def test_a_student_file_says_one_thing(capsys, dataset, run, tmp_path):
    def extra_config(tensors, metadata):  # a second config, far larger than the validated one
        config = json.loads(metadata["config"])
        metadata["extra"] = json.dumps({**json.loads(metadata["extra"]), "config": {**config, "width": 65536}})

    def unknown_key(tensors, metadata):
        metadata["config_override"] = "{}"

    def nan_weight(tensors, metadata):
        tensors["model.head.weight"][0, 0] = float("nan")

    def vocab_out_of_range(tensors, metadata):
        tensors["model.vocab"][-1] = 2**40

    def float_vocab(tensors, metadata):
        tensors["model.vocab"] = tensors["model.vocab"].float()

    def zero_scale(tensors, metadata):
        tensors["model.feature_std"][3] = 0.0

    for change, expected in (
        (extra_config, "metadata 'extra' repeats 'config'"),
        (unknown_key, "metadata 'config_override' is not one a student checkpoint has"),
        (nan_weight, "tensor model.head.weight holds NaN or infinite values"),
        (vocab_out_of_range, "tensor model.vocab differs from the vocabulary its config records"),
        (float_vocab, "tensor model.vocab is F32, expected torch.int64"),
        (zero_scale, "tensor model.feature_std has values <= 0"),
    ):
        student = Path(shutil.copyfile(run / "student.safetensors", tmp_path / "student.safetensors"))
        rewrite(student, change)
        code, err = run_main(
            capsys, "evaluate", "--student", student, "--dataset", dataset, "--report-dir", tmp_path / "report"
        )
        assert_one_line(code, err, str(student), expected)
        assert not (tmp_path / "report").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda t, m: t.update({"optimizer.0.exp_avg": torch.zeros(3, 5)}),
            "tensor optimizer.0.exp_avg has shape [3, 5]",
        ),
        (lambda t, m: t.update({"optimizer.99.exp_avg": torch.zeros(1)}), "unexpected ['optimizer.99.exp_avg']"),
        (lambda t, m: t.pop("optimizer.1.exp_avg_sq"), "missing ['optimizer.1.exp_avg_sq']"),
        (lambda t, m: t["optimizer.2.exp_avg"].fill_(float("inf")), "tensor optimizer.2.exp_avg holds NaN or infinite"),
        (lambda t, m: m.update(optimizer="[]"), "metadata 'optimizer' is not the one AdamW group"),
        (lambda t, m: m.update(step=str(10**12)), "metadata 'step' is 1000000000000, beyond this run's --max-steps 4"),
        (lambda t, m: m.update(step="-3"), "metadata 'step' is missing or not a whole number >= 0"),
    ],
)
def test_a_resume_state_that_lies_is_one_line_naming_file_and_key(capsys, dataset, run, tmp_path, change, expected):
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    shutil.copyfile(copy / "step-2.safetensors", copy / "last.safetensors")
    rewrite(copy / "last.safetensors", change)
    code, err = run_main(capsys, "distill", dataset, "--out", copy, "--resume", *RUN)
    assert_one_line(code, err, str(copy / "last.safetensors"), expected)


def test_evaluate_refuses_an_unknown_teacher_unless_told(capsys, dataset, run, tmp_path):
    unknown = Path(shutil.copytree(dataset, tmp_path / "unknown"))
    manifest = json.loads((unknown / "manifest.json").read_text())
    manifest["teacher"]["content_hash"] = None  # as dataset-from-bag writes it
    (unknown / "manifest.json").write_text(json.dumps(manifest))
    argv = ["evaluate", "--student", run, "--dataset", unknown, "--report-dir", tmp_path / "report"]
    code, err = run_main(capsys, *argv)
    assert_one_line(code, err, f"the dataset {unknown} records no teacher content hash", "--allow-unknown-teacher")
    assert run_main(capsys, *argv, "--allow-unknown-teacher")[0] == 0
    assert (tmp_path / "report" / "report.md").is_file()


def test_evaluate_refuses_held_out_samples_without_image_tokens(capsys, dataset, run, tmp_path):
    textual = Path(shutil.copytree(dataset, tmp_path / "textual"))
    data = FeatureDataset(textual)
    image_id = data.facts.image_token_id
    manifest = json.loads((textual / "manifest.json").read_text())
    start = 0
    for k, entry in enumerate(manifest["shards"]):  # every sample's image tokens become text tokens
        rows = [data[i] for i in range(start, start + entry["num_samples"])]
        samples = [
            Sample(
                start + j,
                d["images"],
                [t if t != image_id else 100 for t in d["input_ids"].tolist()],
                d["layout"],
                d["features"],
                d["source"]["stamp_ns"],
                {key: v for key, v in d["source"].items() if key != "stamp_ns"},
            )
            for j, d in enumerate(rows)
        ]
        entry["bytes"], entry["sha256"] = write_shard(
            textual / shard_name(k), samples, Counter(), data.feature_dim, data.facts.pad_token_id
        )
        start += entry["num_samples"]
    (textual / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_main(capsys, "evaluate", "--student", run, "--dataset", textual, "--report-dir", tmp_path / "r")
    assert_one_line(code, err, f"the held-out samples of {textual} have no image tokens")


def corrupt_copy(source: Path, out: Path, broken: dict[str, int]) -> Path:
    """A copy of a bag in which the n-th message of each topic in ``broken`` is cut to 10 bytes."""
    from rosbags.rosbag2 import Reader, Writer

    seen: Counter = Counter()
    with Reader(source) as reader, Writer(out, version=9) as writer:
        connections = {
            c.id: writer.add_connection(
                c.topic, c.msgtype, typestore=typestore(), offered_qos_profiles=c.ext.offered_qos_profiles
            )
            for c in reader.connections
        }
        for connection, timestamp, data in reader.messages():
            data = bytes(data)
            if seen[connection.topic] == broken.get(connection.topic, -1):
                data = data[:10]
            seen[connection.topic] += 1
            writer.write(connections[connection.id], timestamp, data)
    return out


def test_dataset_from_bag_counts_every_frame_set_and_features_message(capsys, dataset, tmp_path):
    recorded = dataset.parent / "features_bag"
    features = sum(1 for m in read_raw(recorded, ["/groot_node/features"]))
    broken = corrupt_copy(recorded, tmp_path / "broken", {"/groot_node/features": 2, CAMERA: 5})
    code, err = run_main(capsys, "dataset-from-bag", broken, "--camera-topics", CAMERA, "--out", tmp_path / "ds")
    assert code == 0, err
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    skipped = manifest["skipped"]
    assert skipped == {
        "corrupt_features_message": 1,
        "frames_without_features": 1,
        "corrupt_message": 1,
        "features_without_frames": 1,
    }, skipped
    frame_sets = features - 1  # one camera message cannot be read
    assert manifest["num_samples"] + skipped["frames_without_features"] == frame_sets
    assert (
        manifest["num_samples"] + skipped["corrupt_features_message"] + skipped["features_without_frames"] == features
    )
    # The same bag again: refused as finished; another bag: refused naming the field that differs.
    code, err = run_main(capsys, "dataset-from-bag", broken, "--camera-topics", CAMERA, "--out", tmp_path / "ds")
    assert_one_line(code, err, "holds a finished dataset")
    code, err = run_main(capsys, "dataset-from-bag", recorded, "--camera-topics", CAMERA, "--out", tmp_path / "ds")
    assert_one_line(code, err, "bags was")


def test_every_instruction_passes_the_same_check(capsys, tiny_checkpoint, tmp_path):
    # On the command line: one line, before anything is read or created.
    bag = tmp_path / "bag"
    frames = [
        CameraFrame(1_000_000_000 + k * 100_000_000, torch.randint(0, 255, (32, 32, 3), dtype=torch.uint8).numpy())
        for k in range(6)
    ]
    instructions = [(1_000_000_000, "pick up the cube"), (1_250_000_000, "a <|im_end|> b"), (1_300_000_000, "  ")]
    write_camera_bag(bag, frames, instructions)
    for text, expected in (
        ("", "expected non-empty text"),
        ("x" * 102_000, "got 102000 characters"),
        ("a <|im_end|> b", "--instruction: instruction contains the special token"),
    ):
        code, err = run_main(capsys, *extract_argv(tiny_checkpoint, bag, tmp_path / "out", "--instruction", text))
        assert_one_line(code, err, expected)
        assert not (tmp_path / "out").exists()
    # Recorded in a bag: counted by reason, and the instruction before stays in force (as in the node).
    assert run_main(capsys, *extract_argv(tiny_checkpoint, bag, tmp_path / "ds"))[0] == 0
    data = FeatureDataset(tmp_path / "ds")
    assert data.manifest["skipped"] == {"rejected_instruction": 2}
    assert {data.source(i)["instruction"] for i in range(len(data))} == {"pick up the cube"}
    assert len(data) == len(frames)


def test_a_manifest_that_lies_about_the_feature_width_is_refused_naming_the_shard(capsys, dataset, run, tmp_path):
    lying = Path(shutil.copytree(dataset, tmp_path / "lying"))
    manifest = json.loads((lying / "manifest.json").read_text())
    manifest["teacher"]["feature_dim"] = 2048  # the shards hold 64-d features; their hashes still match
    (lying / "manifest.json").write_text(json.dumps(manifest))
    for argv in (
        ["distill", lying, "--out", tmp_path / "run", *RUN],
        ["evaluate", "--student", run, "--dataset", lying, "--report-dir", tmp_path / "report"],
    ):
        code, err = run_main(capsys, *argv)
        assert_one_line(code, err, "shard-00000.safetensors: features of shape [4, ", "feature_dim is 2048")
    assert not (tmp_path / "run").exists() and not (tmp_path / "report").exists()
