"""Offline distillation data: make-bag, extract (MCAP and sqlite3), resume, torchrun, feature bags, bad input."""

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import extract_argv, random_image
from PIL import Image as PILImage
from rosbags.rosbag2 import Writer

from groot_sage_ros.cli import parse_config
from groot_sage_ros.offline.bags import (
    STORAGE,
    CameraFrame,
    typestore,
    write_camera_bag,
)
from groot_sage_ros.offline.dataset import FeatureDataset
from groot_sage_ros.offline.extract import run_extract
from groot_sage_ros.offline.frame_sets import read_frame_sets
from groot_sage_ros.owned_files import Journal

CAMERA = "/camera/image_raw"


def cli_args(*argv):
    return parse_config(argv)


def make_arc_bag(path, storage="mcap", limit=2):
    from groot_sage_ros.offline.make_bag import make_bag

    return make_bag(cli_args("make-bag", "--out", path, "--arc", "--limit", limit, "--storage", storage))


def extract(tiny_checkpoint, bags, out, *extra):
    return run_extract(cli_args(*extract_argv(tiny_checkpoint, list(bags), out, *extra)))


def rows(dataset):
    return [dataset[i] for i in range(len(dataset))]


def assert_same_samples(a, b, ignore=()):
    assert len(a) == len(b)
    for x, y in zip(rows(a), rows(b)):
        assert {k: v for k, v in x["source"].items() if k not in ignore} == {
            k: v for k, v in y["source"].items() if k not in ignore
        }
        assert x["layout"] == y["layout"]
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["input_ids"], y["input_ids"])
        torch.testing.assert_close(x["features"], y["features"], atol=2e-3, rtol=2e-3)


@pytest.fixture(scope="module")
def arc_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("arc") / "bag"
    summary = make_arc_bag(path)
    assert summary["frames"] == 7 and summary["instructions"] == 2
    return path


@pytest.fixture(scope="module")
def arc_dataset(arc_bag, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "dataset"
    manifest = extract(tiny_checkpoint, [arc_bag], out)
    assert manifest["num_samples"] == 7
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_extracted_features_equal_the_engine(storage, tiny_checkpoint, tiny_engine, tmp_path):
    bag = tmp_path / "bag"
    make_arc_bag(bag, storage)
    manifest = extract(tiny_checkpoint, [bag], tmp_path / "dataset")
    dataset = FeatureDataset(tmp_path / "dataset")
    assert len(dataset) == manifest["num_samples"] == 7 and manifest["skipped"] == {}
    assert manifest["teacher"]["feature_dim"] == 64 and len(manifest["teacher"]["content_hash"]) == 64
    assert [s["num_samples"] for s in manifest["shards"]] == [4, 3]
    frame_sets = list(read_frame_sets([bag], [CAMERA], "/instruction", Counter()))
    for sample, frame_set in zip(rows(dataset), frame_sets):
        expected = tiny_engine.extract(frame_set.decode(), frame_set.instruction)
        assert sample["layout"] == expected.layout
        assert sample["features"].dtype == torch.float16
        torch.testing.assert_close(sample["features"].float(), expected.features[0], atol=2e-2, rtol=1e-2)
        assert torch.equal(sample["images"], expected.images)
        assert sample["source"]["frame_id"].startswith("arc/")


def test_out_bag_carries_the_node_contract_and_reads_back(arc_bag, arc_dataset, tiny_checkpoint, tmp_path):
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from groot_sage_ros.offline.bags import read_raw
    from groot_sage_ros.offline.config import DatasetFromBagConfig
    from groot_sage_ros.offline.feature_bag import dataset_from_bag, write_feature_bag
    from groot_sage_ros.ros.conversions import image_msg_to_features, stamp_ns

    out_bag = write_feature_bag(arc_dataset, tmp_path / "features_bag", [arc_bag], [CAMERA], "/instruction")
    messages = list(read_raw(out_bag))
    assert {m.topic for m in messages} == {
        CAMERA,
        "/instruction",
        "/groot_node/features",
        "/groot_node/features/layout",
    }
    camera_stamps = [stamp_ns(deserialize_message(m.data, Image).header.stamp) for m in messages if m.topic == CAMERA]
    features = [deserialize_message(m.data, Image) for m in messages if m.topic == "/groot_node/features"]
    layout = json.loads(deserialize_message(next(m for m in messages if m.topic.endswith("layout")).data, String).data)
    dataset = FeatureDataset(arc_dataset)
    assert [stamp_ns(f.header.stamp) for f in features] == camera_stamps
    for msg, sample in zip(features, rows(dataset)):
        assert msg.encoding == "16FC1" and msg.width == layout["feature_dim"] == 64
        assert msg.height == sample["layout"].seq_len and msg.header.frame_id == sample["source"]["frame_id"]
        np.testing.assert_array_equal(image_msg_to_features(msg), sample["features"].float().numpy())
    dataset_from_bag(DatasetFromBagConfig(bags=[out_bag], camera_topics=[CAMERA], out=tmp_path / "again"))
    assert_same_samples(FeatureDataset(tmp_path / "again"), dataset, ignore=("bag",))  # read from the new bag


def test_interrupted_extract_resumes_to_the_same_result(arc_bag, arc_dataset, tiny_checkpoint, tmp_path):
    partial = Path(shutil.copytree(arc_dataset, tmp_path / "partial"))
    (partial / "manifest.json").unlink()  # a run that died before finishing
    Journal(partial).record("temp", ".shard-00001.safetensors.4242-0badf00d.tmp")  # as a run records its temporary
    (partial / "shard-00001.safetensors").rename(partial / ".shard-00001.safetensors.4242-0badf00d.tmp")  # half-written
    (partial / "notes.tmp").write_text("the user's own file")  # never ours to delete
    with pytest.raises(ValueError, match="no manifest.json"):
        FeatureDataset(partial)
    kept = (partial / "shard-00000.safetensors").stat().st_mtime_ns
    extract(tiny_checkpoint, [arc_bag], partial)
    assert (partial / "shard-00000.safetensors").stat().st_mtime_ns == kept  # finished shard not redone
    assert sorted(p.name for p in partial.glob("*.tmp")) == ["notes.tmp"]  # the crashed run's temporary is gone
    assert (partial / "notes.tmp").read_text() == "the user's own file"
    assert_same_samples(FeatureDataset(partial), FeatureDataset(arc_dataset))


def test_finished_dataset_is_not_overwritten(arc_bag, arc_dataset, tiny_checkpoint, tmp_path):
    out = Path(shutil.copytree(arc_dataset, tmp_path / "done"))
    with pytest.raises(ValueError, match="pass --overwrite"):
        extract(tiny_checkpoint, [arc_bag], out)
    assert extract(tiny_checkpoint, [arc_bag], out, "--overwrite")["num_samples"] == 7


def test_two_processes_under_torchrun_give_exactly_the_one_process_dataset(arc_bag, tiny_checkpoint, tmp_path):
    from safetensors import safe_open

    one_thread = ["--threads", "1"]  # the same intra-op threads in every process: the same bits
    extract(tiny_checkpoint, [arc_bag], tmp_path / "one", *one_thread)
    out = tmp_path / "ddp"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "groot_sage_ros.cli",
            "extract",
            str(arc_bag),
            "--checkpoint",
            str(tiny_checkpoint),
            "--camera-topics",
            CAMERA,
            "--out",
            str(out),
            "--dtype",
            "float32",
            "--batch-size",
            "3",
            "--shard-size",
            "4",
            *one_thread,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "wrote" in run.stdout
    one, two = (json.loads((d / "manifest.json").read_text()) for d in (tmp_path / "one", out))
    assert [s["file"] for s in one["shards"]] == [s["file"] for s in two["shards"]] and one["num_samples"] == 7
    for shard in one["shards"]:  # every tensor and the metadata equal, bit for bit
        with (
            safe_open(str(tmp_path / "one" / shard["file"]), "pt") as a,
            safe_open(str(out / shard["file"]), "pt") as b,
        ):
            assert a.metadata() == b.metadata() and sorted(a.keys()) == sorted(b.keys())
            for key in a.keys():
                assert torch.equal(a.get_tensor(key), b.get_tensor(key)), (shard["file"], key)
    assert two["timing"]["processes"] == 2 and len(two["timing"]["rank_start_s"]) == 2


RANK_TEARDOWN = """
import os, sys
from groot_sage_ros.offline.distributed import distributed, end_distributed, gather_json
rank, world, _ = distributed("cpu")
from transformers import PreTrainedModel  # what loading the engine imports, after the group exists
gather_json(rank, world, "cpu")
end_distributed()
threads = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
with open(os.path.join(sys.argv[1], f"rank{rank}.txt"), "w") as out:  # one file a rank: stdout lines interleave
    out.write(" ".join(threads))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc to list a process's threads")
def test_end_distributed_leaves_no_gloo_thread_for_interpreter_teardown(tmp_path):
    """A gloo thread alive at interpreter teardown can abort a finished run (SIGABRT, exit -6): every rank's
    group must be gone, threads joined, when ``end_distributed`` returns, after the engine's imports."""
    script = tmp_path / "rank.py"
    script.write_text(RANK_TEARDOWN)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    threads = {rank: (tmp_path / f"rank{rank}.txt").read_text().split() for rank in (0, 1)}
    assert all("python" in names and not any("gloo" in name for name in names) for names in threads.values()), threads


def write_bag(path, messages, storage="mcap"):
    """messages: (topic, msgtype, stamp_ns, message object) in time order."""
    store = typestore()
    with Writer(path, version=9, storage_plugin=STORAGE[storage]) as writer:
        connections = {}
        for topic, msgtype, stamp, msg in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], stamp, store.serialize_cdr(msg, msgtype))
    return path


def image_msg(store, stamp, rgb=None, encoding="rgb8", compressed_data=None):
    types = store.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam"
    )
    if compressed_data is not None:
        return types["sensor_msgs/msg/CompressedImage"](
            header=header, format="jpeg", data=np.frombuffer(compressed_data, np.uint8)
        )
    rgb = random_image(32, 32) if rgb is None else rgb
    return types["sensor_msgs/msg/Image"](
        header=header,
        height=rgb.shape[0],
        width=rgb.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=rgb.shape[1] * 3,
        data=rgb.reshape(-1),
    )


def test_bad_messages_are_skipped_and_counted(tiny_checkpoint, tmp_path):
    store = typestore()
    t0, dt = 1_700_000_000 * 10**9, 10**8
    text = store.types["std_msgs/msg/String"]
    raw, jpeg = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
    buffer = __import__("io").BytesIO()
    PILImage.fromarray(random_image(32, 32)).save(buffer, format="JPEG")
    bag = write_bag(
        tmp_path / "bad",
        [
            ("/cam", raw, t0, image_msg(store, t0)),  # before any instruction
            ("/instruction", "std_msgs/msg/String", t0 + dt, text(data="pick")),
            ("/cam", raw, t0 + 2 * dt, image_msg(store, t0 + 2 * dt)),  # good
            ("/cam", raw, t0 + 3 * dt, image_msg(store, t0 + 3 * dt, encoding="yuv422")),  # unknown encoding
            ("/cam", raw, t0 + 4 * dt, image_msg(store, t0 + 4 * dt)),  # good
        ],
    )
    jpeg_bag = write_bag(
        tmp_path / "jpeg",
        [
            ("/instruction", "std_msgs/msg/String", t0, text(data="pick")),
            ("/cam", jpeg, t0 + dt, image_msg(store, t0 + dt, compressed_data=b"\xff\xd8\xff\xe0 broken")),
            ("/cam", jpeg, t0 + 2 * dt, image_msg(store, t0 + 2 * dt, compressed_data=buffer.getvalue())),
        ],
    )
    other = write_camera_bag(tmp_path / "other_topic", [CameraFrame(t0, random_image(8, 8))], camera_topic="/other")
    truncated = Path(shutil.copytree(jpeg_bag, tmp_path / "truncated"))
    mcap = next(truncated.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    not_a_bag = tmp_path / "not_a_bag"
    not_a_bag.mkdir()
    (not_a_bag / "metadata.yaml").write_text("this: is not rosbag2 metadata\n")
    argv = [
        "extract",
        bag,
        jpeg_bag,
        other,
        truncated,
        not_a_bag,
        "--checkpoint",
        tiny_checkpoint,
        "--camera-topics",
        "/cam",
        "--out",
        tmp_path / "ds",
        "--dtype",
        "float32",
    ]
    manifest = run_extract(cli_args(*argv))
    assert manifest["num_samples"] == 3  # two good raw frames and one good JPEG
    skipped = manifest["skipped"]
    assert skipped["no_instruction"] == 1 and skipped["unknown_encoding"] == 1
    assert skipped["corrupt_compressed"] == 1 and skipped["bag_without_camera_topics"] == 1
    assert skipped.get("truncated_bag", 0) + skipped.get("unreadable_bag", 0) == 2
    with pytest.raises(ValueError, match="no input bag has all camera topics"):
        run_extract(
            cli_args(
                "extract", other, "--checkpoint", tiny_checkpoint, "--camera-topics", "/cam", "--out", tmp_path / "none"
            )
        )


def test_instruction_override_and_image_folder_bag(tiny_checkpoint, tmp_path):
    from groot_sage_ros.offline.make_bag import make_bag

    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        PILImage.fromarray(random_image(60 + k, 80, k)).save(photos / f"{k}.png")
    (photos / "notes.txt").write_text("not an image")
    summary = make_bag(
        cli_args("make-bag", "--out", tmp_path / "bag", "--images", photos, "--compressed", "--storage", "sqlite3")
    )
    assert summary["frames"] == 3 and summary["camera_topic"] == CAMERA + "/compressed"
    argv = [
        "extract",
        tmp_path / "bag",
        "--checkpoint",
        tiny_checkpoint,
        "--camera-topics",
        CAMERA + "/compressed",
        "--instruction",
        "stack the cups",
        "--out",
        tmp_path / "ds",
        "--dtype",
        "float32",
    ]
    run_extract(cli_args(*argv))
    dataset = FeatureDataset(tmp_path / "ds")
    assert len(dataset) == 3 and {dataset[i]["source"]["instruction"] for i in range(3)} == {"stack the cups"}
    assert dataset[0]["source"]["frame_id"] == "photo/0.png"


def test_dataset_with_a_manifest_that_does_not_match_is_refused(arc_dataset, tmp_path):
    broken = Path(shutil.copytree(arc_dataset, tmp_path / "broken"))
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["shards"][0]["num_samples"] += 1
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="holds 4 samples, the manifest says 5"):
        FeatureDataset(broken)


def test_prefetch_keeps_order_and_raises_the_readers_error():
    import threading
    import time

    from groot_sage_ros.offline.pipeline import prefetch

    def slow_square(n):  # later items finish first: the order must come from the queue, not the pool
        time.sleep(0.002 * (n % 4))
        return n * n

    readers = set()

    def bag():
        for n in range(40):
            readers.add(threading.current_thread().name)
            yield n

    assert list(prefetch(slow_square, bag(), workers=4, depth=6)) == [n * n for n in range(40)]
    assert readers == {"extract-reader"}  # the bag is read off the thread that queues GPU work

    def broken_bag():
        yield from range(5)
        raise ValueError("bag.mcap: truncated chunk")

    got = []
    with pytest.raises(ValueError, match="truncated chunk"):
        for value in prefetch(slow_square, broken_bag(), workers=2, depth=3):
            got.append(value)
    assert got == [n * n for n in range(5)]  # everything read before the error was delivered

    endless = prefetch(slow_square, iter(range(10**9)), workers=2, depth=3)
    assert next(endless) == 0
    endless.close()  # stops the reader thread instead of hanging on a full queue
    assert not [t for t in threading.enumerate() if t.name == "extract-reader"]


def test_short_batches_are_filled_to_the_batch_size(arc_bag, arc_dataset, tiny_checkpoint, tmp_path):
    """7 frame sets in shards of 4 at batch 3 make batches of 3, 1 and 3: the short one runs at 3 (a new shape
    would recompile, and capture a graph on CUDA, mid-run), and its filler rows leave no trace in the data."""
    from groot_sage_ros.families.n1_5.backbone import VisionTower

    seen = []

    def record_batch(module, args):
        if isinstance(module, VisionTower):
            seen.append(args[0].shape[0])  # pixel_values (B * cameras, 3, 224, 224), one camera here

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record_batch)
    try:
        extract(tiny_checkpoint, [arc_bag], tmp_path / "filled")
    finally:
        hook.remove()
    assert seen and set(seen) == {3}  # the warm-up and every batch
    assert_same_samples(FeatureDataset(tmp_path / "filled"), FeatureDataset(arc_dataset))


def test_non_finite_teacher_features_are_skipped_and_counted(arc_bag, tiny_copy, tmp_path):
    from safetensors.torch import load_file, save_file

    shard = tiny_copy / "model-00001-of-00002.safetensors"
    weights = load_file(shard)
    weights["backbone.eagle_model.vision_model.vision_model.embeddings.patch_embedding.bias"].fill_(float("nan"))
    save_file(weights, shard, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="no frame set became a sample.*nonfinite_features=7"):
        extract(tiny_copy, [arc_bag], tmp_path / "nan")
    assert not (tmp_path / "nan" / "manifest.json").exists()  # an empty dataset is never written
    assert not list((tmp_path / "nan").glob("shard-*"))


def test_torchrun_on_cuda_without_a_gpu_for_the_rank_is_a_clear_error(monkeypatch):
    from groot_sage_ros.offline.distributed import distributed

    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs: the call would start NCCL and wait for the other rank")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ValueError, match="local rank 1 needs GPU 1, but 0 GPU"):
        distributed("cuda")


def test_under_torchrun_a_cuda_device_means_the_ranks_own_gpu():
    from groot_sage_ros.offline.distributed import rank_device

    # an explicit index would put every rank on one GPU, while NCCL binds each to GPU LOCAL_RANK
    assert rank_device("cuda:1", world=2, local_rank=0) == "cuda:0"
    assert rank_device("cuda", world=2, local_rank=1) == "cuda:1"
    assert rank_device("cuda:1", world=1, local_rank=0) == "cuda:1"  # one process: as given
    assert rank_device("cpu", world=2, local_rank=1) == "cpu"  # gloo ranks share the CPU


def test_cpu_thread_counts_leave_room_for_other_work(capsys, arc_bag, tiny_checkpoint, tmp_path):
    from groot_sage_ros.cpu_threads import available_cores, intra_op_threads

    cores = available_cores()
    assert intra_op_threads(requested=3) == 3
    assert 1 <= intra_op_threads() <= cores
    assert intra_op_threads(busy_threads=cores) == 1  # never zero
    assert intra_op_threads(processes=cores) == 1
    extract(tiny_checkpoint, [arc_bag], tmp_path / "ds", "--threads", "1", "--workers", "1")
    assert torch.get_num_threads() == 1
    assert "extract: 1 PyTorch thread(s) on the CPU (--threads" in capsys.readouterr().err
