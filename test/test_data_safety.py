"""Safe with users' data: output folders owned and locked, nothing foreign deleted, atomic checked writes,
verified shards, no pickle, validated configs, bad messages counted, user errors as one line (exit 2).

Real processes and real files throughout: two concurrent ``groot-sage extract`` processes, a tmpfs that
fills up, a crafted pickle whose payload would write a marker file, a bag with a broken CDR message.
"""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CAMERA, TINY_RUN, Payload, extract_argv, random_image
from rosbags.rosbag2 import Writer
from safetensors import safe_open
from safetensors.torch import save_file

from groot_sage_ros.cli import main, parse_config
from groot_sage_ros.offline.bags import STORAGE, typestore
from groot_sage_ros.offline.dataset import FeatureDataset
from groot_sage_ros.offline.make_bag import make_bag
from groot_sage_ros.output_folder import BOOKKEEPING, LOCK

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def cli(*argv):
    return parse_config(argv)


def groot_sage(*argv) -> list[str]:
    return [sys.executable, "-m", "groot_sage_ros.cli", *map(str, argv)]


def run_main(capsys, *argv) -> tuple[int, str]:
    """The CLI's ``main`` in this process: (exit code, stderr); argparse's errors exit through SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture(scope="module")
def arc_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("safety") / "bag"
    make_bag(cli("make-bag", "--out", path, "--arc", "--limit", 6))
    return path


@pytest.fixture(scope="module")
def dataset(arc_bag, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("safety_ds") / "dataset"
    assert main([str(a) for a in extract_argv(tiny_checkpoint, arc_bag, out)]) == 0
    return out


@pytest.fixture(scope="module")
def run_folder(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("safety_run") / "run"
    assert main(["distill", str(dataset), "--out", str(out), *RUN_ARGS]) == 0
    return out


RUN_ARGS = TINY_RUN  # a 4-step distill of a tiny student


def test_two_extracts_into_one_folder_one_refused_and_the_lock_dies_with_its_process(
    arc_bag, dataset, tiny_checkpoint, tmp_path
):
    out = tmp_path / "shared_out"
    first = subprocess.Popen(
        groot_sage(*extract_argv(tiny_checkpoint, arc_bag, out)),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ((out / LOCK).is_file() and (out / LOCK).read_text().startswith("pid")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = subprocess.run(
        groot_sage(*extract_argv(tiny_checkpoint, arc_bag, out)), env=ENV, capture_output=True, text=True, timeout=120
    )
    if first.poll() is None:  # the normal case: the first run still holds the folder
        assert_one_line(second.returncode, second.stderr, f"{out} is in use by another run (pid {first.pid}")
    assert first.wait(timeout=300) == 0, first.communicate()
    assert_same(FeatureDataset(out, verify="all"), FeatureDataset(dataset))

    # A run killed with SIGKILL leaves no lock behind: the next one resumes and finishes.
    killed_out = tmp_path / "killed"
    victim = subprocess.Popen(
        groot_sage(*extract_argv(tiny_checkpoint, arc_bag, killed_out)),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not (killed_out / LOCK).is_file() or not (killed_out / LOCK).read_text():
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = subprocess.run(
        groot_sage(*extract_argv(tiny_checkpoint, arc_bag, killed_out)),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same(FeatureDataset(killed_out, verify="all"), FeatureDataset(dataset))


def assert_same(a: FeatureDataset, b: FeatureDataset) -> None:
    assert len(a) == len(b) == b.manifest["num_samples"]
    for i in range(len(a)):
        assert torch.equal(a[i]["images"], b[i]["images"]) and torch.equal(a[i]["input_ids"], b[i]["input_ids"])
        torch.testing.assert_close(a[i]["features"], b[i]["features"], atol=2e-3, rtol=2e-3)


def user_folder(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True)
    files = {"notes.txt": b"my notes", "half.tmp": b"my temporary file", "manifest.json.bak": b"{}"}
    for name, data in files.items():
        (path / name).write_bytes(data)
    return files


def test_overwrite_replaces_only_what_this_package_wrote(
    capsys, arc_bag, dataset, run_folder, tiny_checkpoint, tmp_path
):
    mine = user_folder(tmp_path / "mine")
    for argv in (
        extract_argv(tiny_checkpoint, arc_bag, tmp_path / "mine", "--overwrite"),
        ["distill", dataset, "--out", tmp_path / "mine", "--overwrite", "--max-steps", "1"],
        ["make-bag", "--out", tmp_path / "mine", "--arc", "--limit", "1"],
        ["dataset-from-bag", arc_bag, "--camera-topics", CAMERA, "--out", tmp_path / "mine"],
        ["tiny-checkpoint", "--out", tmp_path / "mine"],
    ):
        code, err = run_main(capsys, *argv)
        if argv[0] == "dataset-from-bag":  # refused earlier still: the bag has no recorded features
            assert_one_line(code, err, "no /groot_node/features/layout messages")
            continue
        assert_one_line(code, err, "holds files this package did not write", "notes.txt")
    assert {p.name: p.read_bytes() for p in (tmp_path / "mine").iterdir()} == mine  # untouched, nothing added

    # A dataset of ours with a user's file dropped in: --overwrite replaces the dataset, keeps the file.
    ours = Path(shutil.copytree(dataset, tmp_path / "ours"))
    (ours / "my_notes.md").write_text("keep me")
    assert run_main(capsys, *extract_argv(tiny_checkpoint, arc_bag, ours, "--overwrite"))[0] == 0
    assert (ours / "my_notes.md").read_text() == "keep me" and len(FeatureDataset(ours)) == len(FeatureDataset(dataset))

    # Kinds do not mix: a run folder is not a dataset, a dataset is not a run folder.
    code, err = run_main(capsys, *extract_argv(tiny_checkpoint, arc_bag, run_folder, "--overwrite"))
    assert_one_line(code, err, "holds a distill_run output of this package, not a dataset")
    code, err = run_main(capsys, "distill", dataset, "--out", ours, "--overwrite")
    assert_one_line(code, err, "holds a dataset output of this package, not a distill_run")

    # distill --overwrite on its own run folder deletes its own files only.
    run = Path(shutil.copytree(run_folder, tmp_path / "run"))
    (run / "readme.txt").write_text("mine")
    assert (
        run_main(
            capsys,
            "distill",
            dataset,
            "--out",
            run,
            "--overwrite",
            "--max-steps",
            "1",
            "--width",
            "32",
            "--layers",
            "1",
            "--heads",
            "2",
            "--warmup-steps",
            "1",
        )[0]
        == 0
    )
    assert (run / "readme.txt").read_text() == "mine" and not (run / "step-4.safetensors").exists()


FULL_DISK_RUN = """
import json, sys, torch
from groot_sage_ros.cli import main
from groot_sage_ros.families.n1_5.backbone import VisionTower
calls = []
torch.nn.modules.module.register_module_forward_pre_hook(
    lambda module, args: calls.append(1) if isinstance(module, VisionTower) else None)
code = main(sys.argv[1:])
print(json.dumps({"code": code, "model_calls": len(calls)}))
"""


def test_a_full_disk_stops_extract_within_a_batch_and_a_rerun_resumes(arc_bag, dataset, tiny_checkpoint, tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs `unshare -rm` (a mount namespace) to mount a small tmpfs; CI's machine has it")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "full_disk_run.py"
    script.write_text(FULL_DISK_RUN)
    argv = " ".join(map(str, extract_argv(tiny_checkpoint, arc_bag, disk / "ds")))
    python = f"{sys.executable} {script} {argv}"
    # 1.5 MB holds one shard of four samples (about 0.75 MB); the bag has 24 frame sets: 6 shards, 8 batches of 3.
    shell = (
        f"mount -t tmpfs -o size=1500k tmpfs {disk} && {python} 2>{tmp_path}/err1; "
        f"ls -a {disk}/ds > {tmp_path}/listing; mount -o remount,size=64m {disk} && {python} 2>{tmp_path}/err2; "
        f"cp -r {disk}/ds {tmp_path}/resumed"
    )
    done = subprocess.run(["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, timeout=600, env=ENV)
    first, second = (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    err = (tmp_path / "err1").read_text()
    assert first["code"] == 2 and "No space left on device" in err and "Traceback" not in err, err
    assert [line for line in err.splitlines() if not line.startswith("extract:")] == [err.splitlines()[-1]]
    total_batches = 1 + 8  # the warm-up and one call a batch
    assert first["model_calls"] < total_batches  # stopped early, not after computing everything
    listing = (tmp_path / "listing").read_text().split()
    assert "manifest.json" not in listing  # nothing partial looks finished
    assert second["code"] == 0, (tmp_path / "err2").read_text()
    assert_same(FeatureDataset(tmp_path / "resumed", verify="all"), FeatureDataset(dataset))


def test_manifest_names_outside_the_folder_and_changed_shards_are_refused(dataset, tmp_path):
    outside = tmp_path / "outside.safetensors"
    shutil.copyfile(dataset / "shard-00000.safetensors", outside)
    for name in ("../outside.safetensors", str(outside), "sub/shard-00000.safetensors", ".."):
        copy = Path(shutil.copytree(dataset, tmp_path / f"c{len(list(tmp_path.iterdir()))}"))
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["shards"][0]["file"] = name
        (copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match="is not a plain .* file name in the dataset folder"):
            FeatureDataset(copy)
    linked = Path(shutil.copytree(dataset, tmp_path / "linked"))
    (linked / "shard-00000.safetensors").unlink()
    (linked / "shard-00000.safetensors").symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        FeatureDataset(linked)

    flipped = Path(shutil.copytree(dataset, tmp_path / "flipped"))
    shard = flipped / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside the tensor data: the header and the size stay valid
    shard.write_bytes(bytes(data))
    lazy = FeatureDataset(flipped)  # sizes checked at open; the hash on a shard's first read
    assert lazy[0]["features"].shape[1] == 64  # shard 0 is intact and served
    with pytest.raises(ValueError, match="shard-00001.safetensors: content does not match the manifest's sha256"):
        lazy[4]
    with pytest.raises(ValueError, match="shard-00001.safetensors: content does not match"):
        FeatureDataset(flipped, verify="all")
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(ValueError, match="shard-00001.safetensors: .* bytes, the manifest says"):
        FeatureDataset(flipped)


def test_a_crafted_pickle_runs_nothing_at_any_entry_point(capsys, dataset, run_folder, tmp_path):
    from groot_sage_ros.student.engine import StudentEngine

    marker = tmp_path / "payload_ran"
    pickle.loads(pickle.dumps(Payload(tmp_path / "probe")))  # the payload is real: unpickling runs it
    assert (tmp_path / "probe").exists()
    evil_pt = tmp_path / "student.pt"
    torch.save({"config": {}, "model": Payload(marker)}, evil_pt)  # the format the old versions loaded
    run = Path(shutil.copytree(run_folder, tmp_path / "run"))
    shutil.copyfile(evil_pt, run / "student.safetensors")  # a pickle under the new names
    shutil.copyfile(evil_pt, run / "last.safetensors")
    for argv, expected in (
        (["evaluate", "--student", evil_pt, "--dataset", dataset], "a pickle-based checkpoint is never loaded"),
        (["evaluate", "--student", run, "--dataset", dataset], "not a readable safetensors file"),
        (["distill", dataset, "--out", run, "--resume", *RUN_ARGS], "not a readable safetensors file"),
    ):
        assert_one_line(*run_main(capsys, *argv), expected)
    for path in (evil_pt, run / "student.safetensors"):
        with pytest.raises(ValueError):
            StudentEngine.from_checkpoint(path)
    assert not marker.exists()


def rewrite_config(source: Path, target: Path, **changes) -> Path:
    with safe_open(str(source), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = dict(handle.metadata())
    config = json.loads(metadata["config"])
    config.update(changes)
    metadata["config"] = json.dumps(config)
    save_file(tensors, str(target), metadata=metadata)
    return target


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"width": 1_000_000}, "config.width: 1000000 is not a whole number in 1..4096"),
        ({"max_len": 1_000_000_000}, "config.max_len: 1000000000 is not a whole number"),
        ({"heads": 0}, "config.heads: 0 is not a whole number"),
        ({"layers": "8"}, "config.layers: '8' is not a whole number"),
        ({"heads": 3}, "width 32 is not divisible by heads 3"),
        ({"surprise": 1}, "unknown fields ['surprise']"),
        ({"vocab": [5, 3]}, "config.vocab: expected a sorted list"),
        ({"layers": 2}, "tensors do not match the student its config describes"),
    ],
)
def test_student_configs_are_validated_before_anything_is_allocated(run_folder, tmp_path, changes, expected):
    from groot_sage_ros.student.checkpoint import load_student

    bad = rewrite_config(run_folder / "student.safetensors", tmp_path / "student.safetensors", **changes)
    with pytest.raises(ValueError) as err:
        load_student(bad)
    assert str(err.value).startswith(str(bad)) and expected in str(err.value)


def test_checkpoint_configs_are_validated_naming_the_field(tiny_copy):
    from groot_sage_ros.engine import load_engine

    config = json.loads((tiny_copy / "config.json").read_text())
    for section, field, value in (
        ("vision_config", "num_attention_heads", 0),
        ("text_config", "hidden_size", -64),
        ("text_config", "intermediate_size", "128"),
    ):
        broken = json.loads(json.dumps(config))
        broken["backbone_cfg"]["eagle_config"][section][field] = value
        (tiny_copy / "config.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=f"config.json: .*{section}.{field}: {value!r} is not a whole number"):
            load_engine(tiny_copy, device="cpu", dtype="float32", warmup=False)


def broken_cdr_bag(path: Path, *, camera_type: str = "sensor_msgs/msg/Image", instruction: bool = True) -> Path:
    """Three good frames and, between them, one camera message whose CDR payload is cut short."""
    store = typestore()
    types = store.types
    t0 = 1_700_000_000 * 10**9
    with Writer(path, version=9, storage_plugin=STORAGE["mcap"]) as writer:
        camera = writer.add_connection(CAMERA, camera_type, typestore=store)
        text = writer.add_connection("/instruction", "std_msgs/msg/String", typestore=store)
        if instruction:
            writer.write(
                text, t0, store.serialize_cdr(types["std_msgs/msg/String"](data="pick"), "std_msgs/msg/String")
            )
        for k in range(4):
            stamp = t0 + (k + 1) * 10**8
            if camera_type != "sensor_msgs/msg/Image":
                msg = types[camera_type](data="not an image")
                writer.write(camera, stamp, store.serialize_cdr(msg, camera_type))
                continue
            header = types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam"
            )
            rgb = random_image(16, 16, k)
            msg = types["sensor_msgs/msg/Image"](
                header=header, height=16, width=16, encoding="rgb8", is_bigendian=0, step=48, data=rgb.reshape(-1)
            )
            data = store.serialize_cdr(msg, "sensor_msgs/msg/Image")
            writer.write(camera, stamp, data[:60] if k == 1 else data)  # frame 1: cut inside the pixel array
    return path


def test_a_broken_cdr_message_is_a_counted_skip(capsys, tiny_checkpoint, tmp_path):
    bag = broken_cdr_bag(tmp_path / "bag")
    assert run_main(capsys, *extract_argv(tiny_checkpoint, bag, tmp_path / "ds"))[0] == 0
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["num_samples"] == 3 and manifest["skipped"] == {"corrupt_message": 1}


def test_extract_refuses_to_write_an_empty_dataset(capsys, tiny_checkpoint, tmp_path):
    strings = broken_cdr_bag(tmp_path / "strings", camera_type="std_msgs/msg/String")
    code, err = run_main(capsys, *extract_argv(tiny_checkpoint, strings, tmp_path / "a"))
    assert_one_line(
        code,
        err,
        f"camera topic {CAMERA} in {strings} carries std_msgs/msg/String, expected "
        "sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage",
    )
    silent = broken_cdr_bag(tmp_path / "silent", instruction=False)
    code, err = run_main(capsys, *extract_argv(tiny_checkpoint, silent, tmp_path / "b"))
    assert_one_line(code, err, "no message on the instruction topic /instruction", "pass --instruction")
    assert not (tmp_path / "b" / "manifest.json").exists()
    assert run_main(capsys, *extract_argv(tiny_checkpoint, silent, tmp_path / "b", "--instruction", "pick"))[0] == 0
    assert len(FeatureDataset(tmp_path / "b")) == 3


def test_evaluate_refuses_a_student_of_another_teacher(capsys, dataset, run_folder, tmp_path):
    from groot_sage_ros.families.n1_5.tiny import write_tiny_checkpoint

    other = write_tiny_checkpoint(tmp_path / "other_teacher", seed=7)
    code, err = run_main(capsys, "evaluate", "--student", run_folder, "--dataset", dataset, "--teacher", other)
    assert_one_line(code, err, "the student was distilled from teacher", f"--teacher {other} comes from teacher")
    relabelled = Path(shutil.copytree(dataset, tmp_path / "relabelled"))
    manifest = json.loads((relabelled / "manifest.json").read_text())
    manifest["teacher"]["content_hash"] = "0" * 64
    (relabelled / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_main(capsys, "evaluate", "--student", run_folder, "--dataset", relabelled)
    assert_one_line(code, err, f"the dataset {relabelled} comes from teacher 000000000000")


def test_command_line_user_errors_are_one_line_with_exit_code_2(
    capsys, arc_bag, dataset, run_folder, tiny_checkpoint, tmp_path
):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    truncated = Path(shutil.copytree(arc_bag, tmp_path / "truncated"))
    mcap = next(truncated.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:100])
    damaged = Path(shutil.copytree(dataset, tmp_path / "damaged"))
    shard = damaged / "shard-00000.safetensors"
    shard.write_bytes(b"\0" * shard.stat().st_size)
    cuda = (
        []
        if torch.cuda.is_available()
        else [
            (["distill", dataset, "--out", tmp_path / "r1", "--device", "cuda"], "CUDA is not available"),
            (["evaluate", "--student", run_folder, "--dataset", dataset, "--device", "cuda"], "CUDA is not available"),
        ]
    )
    cases = [
        (extract_argv(tiny_checkpoint, arc_bag, tmp_path / "x", "--shard-size", "0"), "--shard-size: '0': expected"),
        (["distill", dataset, "--out", tmp_path / "r2", "--batch-size", "0"], "--batch-size: '0': expected"),
        (["distill", dataset, "--out", tmp_path / "r3", "--max-steps", "0"], "--max-steps: '0': expected"),
        (["make-bag", "--out", arc_bag, "--arc", "--limit", "1"], "already holds a bag"),
        (["make-bag", "--out", tmp_path / "b", "--arc", "--hz", "0"], "--hz: '0': expected a number > 0"),
        (extract_argv(tiny_checkpoint, arc_bag, a_file), f"--out {a_file}: is a file"),
        (["tiny-checkpoint", "--out", a_file], f"--out {a_file}: is a file"),
        (
            ["dataset-from-bag", arc_bag, "--camera-topics", CAMERA, "--out", tmp_path / "d"],
            "no /groot_node/features/layout messages",
        ),
        (
            extract_argv(tiny_checkpoint, tmp_path / "missing_bag", tmp_path / "m"),
            "bag " + str(tmp_path / "missing_bag") + " does not exist",
        ),
        (extract_argv(tiny_checkpoint, truncated, tmp_path / "t"), "no input bag could be read"),
        (["distill", damaged, "--out", tmp_path / "r4"], "shard-00000.safetensors: not a readable dataset shard"),
        *cuda,
    ]
    for argv, expected in cases:
        assert_one_line(*run_main(capsys, *argv), expected)


def test_a_torn_metrics_line_does_not_stop_a_resume(capsys, dataset, run_folder, tmp_path):
    run = Path(shutil.copytree(run_folder, tmp_path / "run"))
    shutil.copyfile(run / "step-2.safetensors", run / "last.safetensors")  # killed after step 2's save ...
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 5, "lo')  # ... in the middle of a metrics line
    argv = [
        "distill",
        dataset,
        "--out",
        run,
        "--resume",
        "--max-steps",
        "4",
        "--save-every",
        "2",
        "--width",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--warmup-steps",
        "1",
        "--eval-every",
        "2",
    ]
    assert run_main(capsys, *argv)[0] == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    (run / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    shutil.copyfile(run / "step-2.safetensors", run / "last.safetensors")  # not finished: it reads the metrics
    code, err = run_main(capsys, *argv)
    assert_one_line(code, err, f"{run / 'metrics.jsonl'}: line 2 is not a metrics record")


def test_the_bookkeeping_files_are_the_only_additions(dataset):
    assert sorted(p.name for p in dataset.iterdir() if p.name.startswith(".")) == sorted(BOOKKEEPING)


def test_the_package_never_unpickles():
    """torch.load and pickle run code from a file; the package reads safetensors and JSON only."""
    package = Path(__file__).parents[1] / "groot_sage_ros"
    offenders = [
        f"{path.relative_to(package)}:{number}"
        for path in package.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "torch.load(" in line or "import pickle" in line or "pickle.load" in line
    ]
    assert offenders == []


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels and holds none: what a decompression bomb looks like."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_an_image_claiming_billions_of_pixels_is_a_counted_skip(capsys, tiny_checkpoint, tmp_path):
    store = typestore()
    types = store.types
    t0 = 1_700_000_000 * 10**9
    topic, kind = CAMERA + "/compressed", "sensor_msgs/msg/CompressedImage"
    with Writer(tmp_path / "bag", version=9, storage_plugin=STORAGE["mcap"]) as writer:
        camera = writer.add_connection(topic, kind, typestore=store)
        for k, data in enumerate([png_header(100_000, 100_000), None]):
            stamp = t0 + k * 10**8
            header = types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam"
            )
            if data is None:
                import io

                from PIL import Image as PILImage

                buffer = io.BytesIO()
                PILImage.fromarray(random_image(16, 16)).save(buffer, format="PNG")
                data = buffer.getvalue()
            msg = types[kind](header=header, format="png", data=np.frombuffer(data, np.uint8))
            writer.write(camera, stamp, store.serialize_cdr(msg, kind))
    argv = [
        "extract",
        tmp_path / "bag",
        "--checkpoint",
        tiny_checkpoint,
        "--camera-topics",
        topic,
        "--out",
        tmp_path / "ds",
        "--dtype",
        "float32",
        "--instruction",
        "look",
    ]
    assert run_main(capsys, *argv)[0] == 0
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["num_samples"] == 1 and manifest["skipped"] == {"image_too_large": 1}


def test_malformed_rows_and_wrong_tensor_types_are_refused_naming_the_file(dataset, run_folder, tmp_path):
    from safetensors.torch import save_file as save

    from groot_sage_ros.offline.dataset import file_digest
    from groot_sage_ros.student.checkpoint import load_student

    copy = Path(shutil.copytree(dataset, tmp_path / "rows"))
    shard = copy / "shard-00000.safetensors"
    with safe_open(str(shard), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = dict(handle.metadata())
    metadata["samples"] = json.dumps([{"bag": "x"}] * 4)  # rows without their layout
    save(tensors, str(shard), metadata=metadata)
    manifest = json.loads((copy / "manifest.json").read_text())
    size, sha256 = file_digest(shard)
    manifest["shards"][0].update(bytes=size, sha256=sha256)  # consistent with its manifest, so only the rows are wrong
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="shard-00000.safetensors: sample row 0 is malformed"):
        FeatureDataset(copy)[0]

    with safe_open(str(run_folder / "student.safetensors"), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = dict(handle.metadata())
    tensors["model.vocab"] = tensors["model.vocab"].float()  # token ids as floats
    save(tensors, str(tmp_path / "student.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match="tensor model.vocab is F32, expected torch.int64"):
        load_student(tmp_path / "student.safetensors")
