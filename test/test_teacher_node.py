"""groot_node over real DDS with the tiny checkpoint: contract, scheduling, bad input, lifecycle."""

import io
import itertools
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from conftest import Payload, random_image
from diagnostic_msgs.msg import DiagnosticStatus
from PIL import Image as PILImage
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_harness import TeacherHarness, frame_sender, isolate_dds, wait_for
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from groot_sage_ros.ros.conversions import image_msg_to_features
from groot_sage_ros.ros.teacher_node import TeacherNode

_names = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def ros():
    isolate_dds()
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def harness_factory(tiny_checkpoint):
    made = []

    def make(**params):
        harness = TeacherHarness(f"t{next(_names)}", tiny_checkpoint, **params)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def test_features_carry_header_layout_and_engine_values(harness_factory, tiny_engine):
    h = harness_factory(cameras=("front/image_raw", "wrist/image_raw"))
    h.instruction_pub.publish(String(data="pick up the cube"))
    assert wait_for(lambda: h.node._instruction == "pick up the cube")
    front, wrist = random_image(120, 160, 1), random_image(90, 120, 2)
    stamp = h.stamp()
    h.publish_rgb(front, 0, "front_link", stamp)
    sent = h.publish_rgb(wrist, 1, "wrist_link", stamp)
    assert wait_for(lambda: h.features)
    msg = h.features[0]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (sent.header.stamp.sec, sent.header.stamp.nanosec)
    assert msg.header.frame_id in ("front_link", "wrist_link") and msg.encoding == "32FC1"
    assert wait_for(lambda: h.layouts)
    layout = json.loads(h.layouts[-1].data)
    assert msg.height == layout["seq_len"] and msg.width == layout["feature_dim"] == 64
    assert [b - a for a, b in layout["image_ranges"]] == [256, 256]
    assert layout["instruction"] == "pick up the cube"
    expected = tiny_engine.extract([front, wrist], "pick up the cube").features[0].numpy()
    np.testing.assert_allclose(image_msg_to_features(msg), expected, atol=1e-4, rtol=1e-4)


def test_float16_features_and_bgr_input(harness_factory, tiny_engine):
    h = harness_factory(feature_dtype="float16")
    rgb = random_image(64, 64, 3)
    msg = Image(height=64, width=64, encoding="bgr8", step=64 * 3, data=rgb[:, :, ::-1].tobytes())
    h.publish(msg)
    assert wait_for(lambda: h.features)
    assert h.features[0].encoding == "16FC1" and h.features[0].step == 64 * 2
    expected = tiny_engine.extract([rgb], "Perform the default behavior.").features[0].numpy()
    np.testing.assert_allclose(image_msg_to_features(h.features[0]), expected, atol=2e-2, rtol=1e-2)


def test_late_subscriber_gets_layout_and_new_instruction_applies(harness_factory):
    h = harness_factory()
    h.publish_rgb(random_image(64, 64))
    assert wait_for(lambda: h.layouts)
    assert json.loads(h.layouts[-1].data)["instruction"] == "Perform the default behavior."
    h.instruction_pub.publish(String(data="open the drawer"))
    assert wait_for(lambda: h.node._instruction == "open the drawer")
    late = rclpy.create_node("late", namespace=h.namespace)
    late_layouts = []
    from ros_harness import LATCHED

    late.create_subscription(String, "groot_node/features/layout", late_layouts.append, LATCHED)
    h.executor.add_node(late)
    assert wait_for(lambda: late_layouts)  # transient-local: the layout already sent
    h.publish_rgb(random_image(64, 64))
    assert wait_for(lambda: json.loads(late_layouts[-1].data)["instruction"] == "open the drawer")
    h.executor.remove_node(late)
    late.destroy_node()


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def test_flooding_keeps_the_newest_frames_counts_drops_and_holds_memory(harness_factory):
    h = harness_factory()
    images = [random_image(240, 320, k) for k in range(4)]

    def burst(n):
        for k in range(n):
            h.publish_rgb(images[k % 4], frame_id=f"f{k}")

    burst(100)
    assert wait_for(lambda: h.features and h.features[-1].header.frame_id == "f99")
    before = rss_mb()
    burst(600)
    assert wait_for(lambda: h.features[-1].header.frame_id == "f599")  # the newest frame set is served
    growth = rss_mb() - before
    assert len(h.features) < 700  # far fewer outputs than inputs: superseded frame sets were dropped
    assert wait_for(lambda: h.counter("dropped_superseded") > 0, timeout=5)
    values = h.diag_values()
    for key in (
        "input_rate_hz[camera/image_raw]",
        "output_rate_hz",
        "latency_ms_p50[model]",
        "latency_ms_p95[decode]",
        "latency_ms_p95[preprocess]",
        "latency_ms_p95[publish]",
        "model_id",
        "feature_dim",
        "gpu_memory_mb",
    ):
        assert key in values, key
    assert growth < 50, f"RSS grew {growth:.0f} MB while flooding"


@pytest.mark.parametrize(
    "bad, reason",
    [
        (Image(height=8, width=8, encoding="yuv422_weird", step=16, data=bytes(128)), "rejected_unknown_encoding"),
        (Image(height=0, width=0, encoding="rgb8", step=0, data=b""), "rejected_zero_size"),
        (Image(height=8, width=8, encoding="rgb8", step=24, data=bytes(100)), "rejected_size_mismatch"),
        (Image(height=1, width=8, encoding="rgb8", step=24, data=bytes(24)), "rejected_bad_image"),  # too small
    ],
)
def test_bad_raw_images_are_skipped_and_counted(harness_factory, bad, reason):
    h = harness_factory(diagnostics_period_s=0.2)
    h.publish(bad)
    assert wait_for(lambda: h.counter(reason) == 1)
    assert wait_for(lambda: any(d.status[0].level == DiagnosticStatus.WARN for d in h.diagnostics))
    h.publish_rgb(random_image(64, 64))
    assert wait_for(lambda: h.features)  # the node keeps serving


def test_corrupt_jpeg_is_skipped_and_good_jpeg_is_served(harness_factory):
    h = harness_factory(cameras=("camera/image_raw/compressed",), diagnostics_period_s=0.2)
    h.publish(CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0 truncated"))
    assert wait_for(lambda: h.counter("rejected_corrupt_compressed") == 1)
    buffer = io.BytesIO()
    PILImage.fromarray(random_image(48, 64)).save(buffer, format="JPEG")
    h.publish(CompressedImage(format="jpeg", data=buffer.getvalue()))
    assert wait_for(lambda: h.features)


def test_cameras_that_never_synchronise_are_counted(harness_factory):
    h = harness_factory(
        cameras=("a/image_raw", "b/image_raw"), sync_slop_s=0.01, sync_queue_size=2, diagnostics_period_s=0.2
    )
    for k in range(6):
        h.publish_rgb(random_image(32, 32), 0, stamp=h.stamp(0.0))
        h.publish_rgb(random_image(32, 32), 1, stamp=h.stamp(-0.5))
    assert wait_for(lambda: h.counter("dropped_unsynchronised") >= 4)
    assert not h.features
    assert any("sync_slop_s" in d.status[0].message for d in h.diagnostics)
    stamp = h.stamp()
    h.publish_rgb(random_image(32, 32), 0, stamp=stamp)
    h.publish_rgb(random_image(32, 32), 1, stamp=stamp)
    assert wait_for(lambda: h.features)


def test_stale_frames_are_never_used(harness_factory):
    h = harness_factory(max_frame_age_s=0.5, diagnostics_period_s=0.2)
    h.publish_rgb(random_image(32, 32), stamp=h.stamp(-5.0))
    assert wait_for(lambda: h.counter("dropped_stale") == 1)
    assert not h.features


def test_empty_instruction_is_rejected_and_the_last_one_kept(harness_factory):
    h = harness_factory(diagnostics_period_s=0.2)
    h.instruction_pub.publish(String(data="wave"))
    assert wait_for(lambda: h.node._instruction == "wave")
    h.instruction_pub.publish(String(data="   "))
    assert wait_for(lambda: h.counter("rejected_instruction") == 1)
    h.publish_rgb(random_image(32, 32))
    assert wait_for(lambda: h.layouts and json.loads(h.layouts[-1].data)["instruction"] == "wave")


def test_nan_features_are_skipped(tiny_checkpoint, tmp_path):
    import shutil

    root = shutil.copytree(tiny_checkpoint, tmp_path / "nan_checkpoint")
    shard = root / "model-00001-of-00002.safetensors"
    tensors = load_file(str(shard))
    key = "backbone.eagle_model.language_model.model.norm.weight"
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(shard), metadata={"format": "pt"})
    h = TeacherHarness("nan", root, diagnostics_period_s=0.2)
    try:
        for _ in range(2):
            h.publish_rgb(random_image(32, 32))
            wait_for(lambda: False, timeout=0.3)
        assert wait_for(lambda: h.counter("rejected_nonfinite") >= 1)
        assert not h.features
        assert h.node._worker.is_alive()
    finally:
        h.close()


def test_lifecycle_keeps_the_engine_through_deactivate_and_cleanup_releases_it(harness_factory):
    h = harness_factory(diagnostics_period_s=0.2)
    node = h.node
    h.publish_rgb(random_image(32, 32))
    assert wait_for(lambda: h.features)
    engine = node.engine
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.engine is engine and node._worker is None  # inactive, still loaded
    count = len(h.features)
    h.publish_rgb(random_image(32, 32))
    assert not wait_for(lambda: len(h.features) > count, timeout=1.0)  # inactive: nothing served
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node.engine is engine and node.counters.snapshot()["engine_loads"] == 1  # no reload
    h.publish_rgb(random_image(32, 32))
    assert wait_for(lambda: len(h.features) > count)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert node.engine is None and node.config is None  # cleanup released it
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.counters.snapshot()["engine_loads"] == 2  # configure after cleanup loads again
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    h.publish_rgb(random_image(32, 32))
    assert wait_for(lambda: len(h.features) > count + 1)
    assert wait_for(lambda: h.counter("engine_loads") == 2)  # and diagnostics say so


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"checkpoint": "/nonexistent/checkpoint"}, "parameter 'checkpoint'"),
        ({"device": "cuda"}, "parameter 'device'"),
        ({"dtype": "float8"}, "parameter 'dtype'"),
        ({"camera_topics": [""]}, "parameter 'camera_topics'"),
        ({"compile": "fast"}, "parameter 'compile'"),
        ({"precision": "fp8"}, "parameter 'precision': precision 'fp8' needs FP8 tensor cores"),
        ({"precision": "int4"}, "parameter 'precision'"),
    ],
)
def test_misconfiguration_fails_configure_naming_the_parameter(tiny_checkpoint, params, expected, caplog):
    if (params.get("device") == "cuda" or params.get("precision") == "fp8") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    base = {"checkpoint": str(tiny_checkpoint), "device": "cpu", "dtype": "float32", "autostart": False}
    node = TeacherNode(
        namespace=f"m{next(_names)}", parameter_overrides=[Parameter(k, value=v) for k, v in {**base, **params}.items()]
    )
    messages = []
    node.get_logger().error = lambda text, **kw: messages.append(text)  # capture the one error line
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert len(messages) == 1 and expected in messages[0], messages
        assert node.engine is None
    finally:
        node.destroy_node()


def test_bag_played_with_clock_under_sim_time(harness_factory, tmp_path):
    from groot_sage_ros.offline.bags import CameraFrame, write_camera_bag
    from groot_sage_ros.ros.bag_player import BagPlayer
    from groot_sage_ros.ros.conversions import stamp_ns

    start = 1_600_000_000 * 10**9  # years in the past: only sim time makes these frames fresh
    frames = [CameraFrame(start + k * 100_000_000, random_image(40, 60, k), "bag_cam") for k in range(5)]
    h = harness_factory(cameras=("camera/image_raw/compressed",), use_sim_time=True, max_frame_age_s=1.0)
    bag = write_camera_bag(
        tmp_path / "bag",
        frames,
        [(start, "stack the cups")],
        compressed=True,
        camera_topic=f"/{h.namespace}/camera/image_raw",
        instruction_topic=f"/{h.namespace}/instruction",
    )
    played = BagPlayer(h.probe, bag, rate=2.0).play()
    assert played == 6
    assert wait_for(lambda: len(h.features) == 5)
    assert [stamp_ns(m.header.stamp) for m in h.features] == [f.stamp_ns for f in frames]
    assert {m.header.frame_id for m in h.features} == {"bag_cam"}
    assert json.loads(h.layouts[-1].data)["instruction"] == "stack the cups"


EMBODIMENT = str(Path(__file__).resolve().parents[1] / "config" / "embodiments" / "so100.yaml")
SO100_JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def action_harness(harness_factory, **params):
    h = harness_factory(
        **{
            "action_head.enabled": True,
            "action_head.embodiment_config": EMBODIMENT,
            "diagnostics_period_s": 0.2,
            **params,
        }
    )
    h.chunks, h.live_chunks = [], []
    h.probe.create_subscription(JointTrajectory, "groot_node/action_chunk/dry_run", h.chunks.append, 10)
    h.probe.create_subscription(JointTrajectory, "groot_node/action_chunk", h.live_chunks.append, 10)
    h.joint_pub = h.probe.create_publisher(JointState, "joint_states", 10)
    return h


def publish_joints(h, names=SO100_JOINTS, offset_s=0.0):
    msg = JointState(name=names, position=[0.1 * k for k in range(len(names))])
    msg.header.stamp = h.stamp(offset_s)
    h.joint_pub.publish(msg)
    assert wait_for(lambda: h.node.chunks.joint_state is not None and list(h.node.chunks.joint_state.name) == names)


def test_joint_state_and_images_give_a_dry_run_chunk(harness_factory):
    h = action_harness(harness_factory, **{"action_head.seed": 3})
    publish_joints(h)
    sent = h.publish_rgb(random_image(64, 64), frame_id="cam")
    assert wait_for(lambda: h.chunks)
    chunk = h.chunks[0]
    assert chunk.joint_names == SO100_JOINTS and len(chunk.points) == 16
    assert (chunk.header.stamp.sec, chunk.header.stamp.nanosec) == (sent.header.stamp.sec, sent.header.stamp.nanosec)
    times = [p.time_from_start.sec + p.time_from_start.nanosec / 1e9 for p in chunk.points]
    assert all(b > a for a, b in zip(times, times[1:])) and times[0] == pytest.approx(1 / 30)
    assert all(len(p.positions) == 6 and all(np.isfinite(p.positions)) for p in chunk.points)
    assert not h.live_chunks  # dry run: nothing on the live topic
    # The same seed and input give the same chunk.
    h.publish_rgb(random_image(64, 64), frame_id="cam")
    assert wait_for(lambda: len(h.chunks) == 2)
    assert [list(p.positions) for p in h.chunks[1].points] == [list(p.positions) for p in chunk.points]


def test_live_topic_and_clipping_are_counted(harness_factory, tmp_path):
    import yaml

    config = yaml.safe_load(open(EMBODIMENT))
    config["limits"] = {joint: [-0.001, 0.001] for joint in SO100_JOINTS}  # tighter than any chunk
    (tmp_path / "tight.yaml").write_text(yaml.safe_dump(config))
    h = action_harness(
        harness_factory, **{"action_head.dry_run": False, "action_head.embodiment_config": str(tmp_path / "tight.yaml")}
    )
    publish_joints(h)
    h.publish_rgb(random_image(64, 64))
    assert wait_for(lambda: h.live_chunks)
    assert all(abs(v) <= 0.001 for p in h.live_chunks[0].points for v in p.positions)
    assert wait_for(lambda: h.counter("action_values_clipped") > 0)
    assert not h.chunks


def test_stale_or_incomplete_joint_state_gives_no_chunk(harness_factory):
    h = action_harness(harness_factory, **{"action_head.max_state_age_s": 0.5})
    h.publish_rgb(random_image(64, 64))  # no joint state at all
    assert wait_for(lambda: h.counter("action_skipped_stale_state") == 1)
    publish_joints(h, offset_s=-5.0)  # stale
    h.publish_rgb(random_image(64, 64))
    assert wait_for(lambda: h.counter("action_skipped_stale_state") == 2)
    assert wait_for(lambda: any("max_state_age_s" in d.status[0].message for d in h.diagnostics))
    publish_joints(h, names=SO100_JOINTS[:-1])  # fresh, but no gripper
    h.publish_rgb(random_image(64, 64))
    assert wait_for(lambda: h.counter("action_skipped_bad_state") == 1)
    assert not h.chunks
    assert len(h.features) == 3  # features keep flowing
    publish_joints(h)
    h.publish_rgb(random_image(64, 64))
    assert wait_for(lambda: h.chunks)


def test_action_head_without_embodiment_config_fails_configure(tiny_checkpoint):
    node = TeacherNode(
        namespace=f"m{next(_names)}",
        parameter_overrides=[
            Parameter("checkpoint", value=str(tiny_checkpoint)),
            Parameter("device", value="cpu"),
            Parameter("autostart", value=False),
            Parameter("action_head.enabled", value=True),
        ],
    )
    messages = []
    node.get_logger().error = lambda text, **kw: messages.append(text)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert len(messages) == 1 and "parameter 'action_head.embodiment_config'" in messages[0]
    finally:
        node.destroy_node()


def test_a_message_that_does_not_deserialise_is_a_counted_skip(harness_factory):
    from rclpy.serialization import serialize_message

    from groot_sage_ros.ros.conversions import array_to_image

    h = harness_factory(diagnostics_period_s=0.2)
    msg = array_to_image(random_image(32, 32))
    msg.header.stamp = h.stamp()
    h.camera_pubs[0].publish(serialize_message(msg)[:60])  # raw CDR bytes, cut inside the pixel array
    assert wait_for(lambda: h.counter("rejected_corrupt_message") == 1)
    h.publish_rgb(random_image(32, 32))
    assert wait_for(lambda: h.features)  # the node goes on serving
    assert h.counter("rejected_internal_error") == 0


def test_long_instructions_are_rejected_and_quoted_with_a_bounded_prefix(harness_factory):
    h = harness_factory(diagnostics_period_s=0.2, max_instruction_chars=200)
    warnings = []
    h.node.get_logger().warning = lambda text, **kw: warnings.append(text)
    h.instruction_pub.publish(String(data="wave"))
    assert wait_for(lambda: h.node._instruction == "wave")
    h.instruction_pub.publish(String(data="pick up the cube " * 6000))  # 102 kB
    assert wait_for(lambda: h.counter("rejected_instruction_too_long") == 1)
    assert h.node._instruction == "wave"
    assert warnings and all(len(w) < 400 for w in warnings), warnings
    assert "(102000 characters)" in warnings[-1] and "max_instruction_chars=200" in warnings[-1]
    h.instruction_pub.publish(String(data=" " * 199))  # rejected by the processor: quoted, bounded too
    assert wait_for(lambda: h.counter("rejected_instruction") == 1)
    assert len(warnings[-1]) < 400


def test_default_instruction_set_at_run_time_passes_the_instruction_check(harness_factory):
    h = harness_factory(diagnostics_period_s=0.2, max_instruction_chars=200)
    for text, expected in (
        ("a" * 100_000, "at most max_instruction_chars=200 characters, got 100000"),
        ("a <|im_end|> b", "special token '<|im_end|>'"),
        ("   ", "non-empty"),
    ):
        result = h.node.set_parameters([Parameter("default_instruction", value=text)])[0]
        assert not result.successful and expected in result.reason, result.reason
    assert h.node.config.default_instruction == "Perform the default behavior."
    assert h.node.set_parameters([Parameter("default_instruction", value="wave")])[0].successful
    h.publish_rgb(random_image(32, 32))
    assert wait_for(lambda: h.layouts and json.loads(h.layouts[-1].data)["instruction"] == "wave")
    assert h.counter("rejected_bad_image") == 0


def broken_embodiment(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_every_configure_failure_is_one_error_line_naming_the_input(tiny_checkpoint, tmp_path):
    from groot_sage_ros.ros.student_node import StudentNode

    marker = tmp_path / "payload_ran"
    so100 = (Path(__file__).parents[1] / "config" / "embodiments" / "so100.yaml").read_text()
    heads0 = Path(__import__("shutil").copytree(tiny_checkpoint, tmp_path / "heads0"))
    config = json.loads((heads0 / "config.json").read_text())
    config["backbone_cfg"]["eagle_config"]["text_config"]["num_attention_heads"] = 0
    (heads0 / "config.json").write_text(json.dumps(config))
    (tmp_path / "student.safetensors").write_text(json.dumps(["not", "a", "student"]))
    torch.save({"model": Payload(marker)}, tmp_path / "evil.pt")  # a crafted pickle, under both names
    __import__("shutil").copyfile(tmp_path / "evil.pt", tmp_path / "evil.safetensors")
    head = {"action_head.enabled": True}
    unknown = Path(__import__("shutil").copytree(tiny_checkpoint, tmp_path / "unknown_family"))
    config = json.loads((unknown / "config.json").read_text())
    config.update(model_type="gr00t_n1_7", architectures=["GR00T_N1_7"])
    (unknown / "config.json").write_text(json.dumps(config))
    student = tmp_path / "good_student.safetensors"
    write_untrained_student(student)
    so100_path = str(Path(__file__).parents[1] / "config" / "embodiments" / "so100.yaml")
    student_head = {"student": str(student), **head, "action_head.embodiment_config": so100_path}
    nan_student, vocab_student = tmp_path / "nan.safetensors", tmp_path / "vocab.safetensors"
    for path, name, value in ((nan_student, "model.head.weight", float("nan")), (vocab_student, "model.vocab", 2**40)):
        tensors = load_file(student)
        tensors[name].view(-1)[-1] = value
        with safe_open(str(student), framework="pt") as handle:
            save_file(tensors, str(path), metadata=handle.metadata())
    cases = [
        (TeacherNode, {"checkpoint": str(unknown)}, "not a supported GR00T model family"),
        (TeacherNode, {"default_instruction": "a <|im_end|> b"}, "parameter 'default_instruction' 'a <|im_end|> b'"),
        (StudentNode, {"student": str(nan_student)}, "tensor model.head.weight holds NaN or infinite values"),
        (StudentNode, {"student": str(vocab_student)}, "tensor model.vocab differs from the vocabulary"),
        (StudentNode, student_head, "parameter 'action_head.checkpoint': empty"),
        (
            StudentNode,
            {**student_head, "action_head.checkpoint": str(tmp_path / "nowhere")},
            "parameter 'action_head.checkpoint'",
        ),
        (StudentNode, {"student": str(tmp_path / "student.safetensors")}, "parameter 'student'"),
        (StudentNode, {"student": str(tmp_path / "evil.pt")}, "pickle-based checkpoint is never loaded"),
        (StudentNode, {"student": str(tmp_path / "evil.safetensors")}, "not a readable safetensors file"),
        (
            TeacherNode,
            {
                **head,
                "action_head.embodiment_config": broken_embodiment(
                    tmp_path / "python_tag.yaml", so100 + f"extra: !!python/object/apply:os.system ['touch {marker}']\n"
                ),
            },
            "parameter 'action_head.embodiment_config': embodiment config",
        ),
        (
            TeacherNode,
            {
                **head,
                "action_head.embodiment_config": broken_embodiment(
                    tmp_path / "limits.yaml", so100.replace("gripper: [-0.17, 1.75]", "gripper: [0.5]")
                ),
            },
            "limits.gripper = [0.5], expected [low, high]",
        ),
        (
            TeacherNode,
            {**head, "action_head.embodiment_config": broken_embodiment(tmp_path / "list.yaml", "- a\n- b\n")},
            "expected a mapping at the top",
        ),
        (TeacherNode, {"checkpoint": str(heads0)}, "text_config.num_attention_heads: 0 is not a whole number"),
    ]
    for node_cls, params, expected in cases:
        base = {"device": "cpu", "dtype": "float32", "autostart": False}
        if node_cls is TeacherNode:
            base["checkpoint"] = str(tiny_checkpoint)
        node = node_cls(
            namespace=f"m{next(_names)}",
            parameter_overrides=[Parameter(k, value=v) for k, v in {**base, **params}.items()],
        )
        messages = []
        node.get_logger().error = lambda text, **kw: messages.append(text)
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
            assert len(messages) == 1 and expected in messages[0] and "\n" not in messages[0], messages
        finally:
            node.destroy_node()
    assert not marker.exists()


def write_untrained_student(path: Path) -> None:
    """A real (untrained) student for the tiny teacher's width, as distill writes one."""
    from groot_sage_ros.families.n1_5.processor import N15Processor
    from groot_sage_ros.student.checkpoint import save_student
    from groot_sage_ros.student.config import StudentConfig
    from groot_sage_ros.student.model import SageStudent

    processor = N15Processor()
    ids, _ = processor.encode(1, "Perform the default behavior.")
    config = StudentConfig.for_teacher(processor.facts, 64, sorted(set(ids)), width=32, layers=1, heads=2)
    save_student(path, SageStudent(config), {"eval_groups": []}, step=0)


def node_process(module: str, *ros_args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", f"groot_sage_ros.ros.{module}", *ros_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigint_with_frames_flowing_stops_the_node_cleanly_without_an_error_line(tiny_checkpoint):
    namespace = f"sig{next(_names)}"
    process = node_process(
        "teacher_node",
        "--ros-args",
        "-r",
        f"__ns:=/{namespace}",
        "-p",
        f"checkpoint:={tiny_checkpoint}",
        "-p",
        "device:=cpu",
        "-p",
        "dtype:=float32",
    )
    probe = rclpy.create_node("sigint_probe", namespace=namespace)
    features = []
    probe.create_subscription(Image, "groot_node/features", features.append, 10)
    camera = probe.create_publisher(Image, "camera/image_raw", rclpy.qos.qos_profile_sensor_data)
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(probe)
    send = frame_sender(probe, executor, camera, random_image(64, 64), spin_s=0.01)

    def flowing():
        send()
        return len(features) >= 5

    try:
        assert wait_for(flowing, timeout=90, period=0.0), "no features from the node"
        for _ in range(20):  # keep the worker busy while the signal arrives
            flowing()
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=120)[0]  # a guard against a hang, not a bound on a busy machine
    finally:
        if process.poll() is None:
            process.kill()
        executor.shutdown()
        probe.destroy_node()
    assert process.returncode == 0, output  # it stopped on SIGINT by itself, with its own status
    assert "[ERROR]" not in output and "Traceback" not in output and "context is invalid" not in output, output


def test_a_failed_autostart_exits_non_zero_and_help_prints_the_parameters(tmp_path):
    process = node_process(
        "student_node", "--ros-args", "-p", f"student:={tmp_path / 'missing.safetensors'}", "-p", "device:=cpu"
    )
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 1, output
    assert [line for line in output.splitlines() if "[ERROR]" in line] == [line for line in output.splitlines() if line]
    assert "configure failed: parameter 'student'" in output
    for module, parameter in (("teacher_node", "checkpoint"), ("student_node", "teacher_features_topic")):
        process = node_process(module, "--help")
        output = process.communicate(timeout=60)[0]
        assert process.returncode == 0 and f"  {parameter} = " in output and "max_instruction_chars" in output, output


@pytest.mark.parametrize("frame_id, dtype", [("", "float32"), ("cam", "float16"), ("camera_optical_frame", "float32")])
def test_features_serialised_directly_are_the_image_message(frame_id, dtype):
    """The node publishes features as CDR bytes it builds itself (one copy): the same message, every field."""
    from builtin_interfaces.msg import Time
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import Header

    from groot_sage_ros.ros.conversions import features_to_cdr, features_to_image_msg

    header = Header(stamp=Time(sec=1_700_000_001, nanosec=123_456_789), frame_id=frame_id)
    features = np.random.default_rng(3).standard_normal((7, 5)).astype(np.float32)
    expected, got = (
        features_to_image_msg(features, header, dtype),
        deserialize_message(features_to_cdr(features, header, dtype), Image),
    )
    for field in ("header", "height", "width", "encoding", "is_bigendian", "step", "data"):
        assert getattr(got, field) == getattr(expected, field), field
    assert np.array_equal(image_msg_to_features(got), image_msg_to_features(expected))


def test_configure_warms_every_serving_path_up_and_reports_it(harness_factory, tiny_checkpoint, tmp_path):
    """The warm-up at configure sends synthetic frames of warmup_camera_size, in each camera's message type,
    through decode, preprocessing, the model and the action head: the diagnostics report its time."""
    h = harness_factory(
        diagnostics_period_s=0.2,
        camera_topics=["front/image_raw", "wrist/image_raw/compressed"],
        warmup_camera_size=[96, 64],
        **{"action_head.enabled": True, "action_head.embodiment_config": EMBODIMENT},
    )
    assert h.node.warmup_seconds is not None and h.node.warmup_seconds > 0
    assert wait_for(lambda: "warmup_s" in h.diag_values())
    assert float(h.diag_values()["warmup_s"]) > 0
    assert h.node.counters.snapshot().get("published", 0) == 0  # nothing published by the warm-up
    assert h.node.counters.snapshot().get("action_chunks", 0) == 0


def test_precision_keep_fp16_reaches_the_diagnostics(harness_factory):
    h = harness_factory(precision="int8_weight", precision_keep_fp16=["down_proj"], diagnostics_period_s=0.2)
    assert wait_for(lambda: h.diag_values().get("precision_keep_fp16") == "down_proj")
    assert h.diag_values()["modules_kept_fp16"] == "2" and h.diag_values()["precision"] == "int8_weight"
