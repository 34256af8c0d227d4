"""Real-time chunking and the execution schedule: the head's prefix and guided modes for both families,
the schedule's arithmetic, and groot_node over real DDS (frozen steps, boundary jumps, stamping, delay)."""

from itertools import count
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from conftest import random_image
from ros_harness import TeacherHarness, isolate_dds, wait_for
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from groot_sage_ros.api import ChunkPrefix
from groot_sage_ros.engine import TeacherEngine
from groot_sage_ros.families.common.normalization import EmbodimentNormalizer, KeyStats, example_stats
from groot_sage_ros.ros.conversions import stamp_ns
from groot_sage_ros.serving.chunk_schedule import ChunkSchedule, PublishedChunk

EMBODIMENT = str(Path(__file__).resolve().parents[1] / "config" / "embodiments" / "so100.yaml")
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
PERIOD_NS = int(round(1e9 / 30))
_names = count()


@pytest.fixture(scope="module")
def engines(tiny_checkpoint, tmp_path_factory):
    from groot_sage_ros.families.n1_7.tiny import write_tiny_checkpoint

    n17 = write_tiny_checkpoint(tmp_path_factory.mktemp("rtc_n17") / "checkpoint")
    return {
        "gr00t_n1_5": (TeacherEngine.from_pretrained(tiny_checkpoint, "cpu", "float32", action_head=True), 31),
        "gr00t_n1_7": (TeacherEngine.from_pretrained(n17, "cpu", "float32", action_head=True), 10),
    }


@pytest.mark.parametrize("family", ["gr00t_n1_5", "gr00t_n1_7"])
def test_prefix_freezes_the_committed_steps_and_guided_pulls_the_overlap(engines, family):
    engine, embodiment = engines[family]
    result = engine.extract([random_image(64, 64, 1)], "lift the cup")
    state = torch.zeros(1, engine.state_width)
    previous = engine.predict_actions(result, state, embodiment, seed=1)[0]  # (H, A)
    horizon, elapsed = previous.shape[0], 4
    continued = torch.zeros_like(previous)
    continued[: horizon - elapsed] = previous[elapsed:]
    free = engine.predict_actions(result, state, embodiment, seed=2)[0]
    prefix = ChunkPrefix(continued, frozen=3, overlap=horizon - elapsed, mode="prefix")
    hard = engine.predict_actions(result, state, embodiment, seed=2, prefix=prefix)[0]
    assert torch.equal(hard[:3], continued[:3])  # the committed steps, exactly
    torch.testing.assert_close(
        hard, engine.predict_actions(result, state, embodiment, seed=2, prefix=prefix, reference=True)[0]
    )
    chunks = {}
    for jacobian_steps in (-1, 1, 0):  # every step through the head's Jacobian, the first only, none (identity)
        guidance = ChunkPrefix(continued, 3, horizon - elapsed, "guided", guided_steps=jacobian_steps)
        guided = engine.predict_actions(result, state, embodiment, seed=2, prefix=guidance)[0]
        pulled = (guided[:3] - continued[:3]).abs().mean() / (free[:3] - continued[:3]).abs().mean()
        assert pulled < 0.1, jacobian_steps  # the frozen steps move to the prefix
        torch.testing.assert_close(guided[-2:], free[-2:], rtol=0, atol=1e-3)  # past the overlap: the free flow
        chunks[jacobian_steps] = guided
    assert not torch.equal(chunks[-1], chunks[1]) and not torch.equal(chunks[1], chunks[0])  # three products


def test_schedule_delay_due_continuation_and_stamps():
    schedule = ChunkSchedule(rate_hz=30.0, execution_horizon=8)
    assert schedule.delay_steps(16) == 0 and schedule.is_due(0, 0)  # nothing measured, nothing published
    for latency_ms in (90.0, 100.0, 110.0):  # an injected camera-to-publish latency
        schedule.record_latency(0, int(latency_ms * 1e6))
    assert schedule.delay_steps(16) == 4  # ceil(p95 ~ 109 ms / 33.3 ms)
    normalised = np.arange(16 * 2, dtype=np.float32).reshape(16, 2)
    schedule.last = PublishedChunk(due_ns=PERIOD_NS, normalised=normalised, positions=normalised[:12], state={})
    assert not schedule.is_due(3 * PERIOD_NS, 4) and schedule.is_due(4 * PERIOD_NS, 4)  # after 8 - 4 steps
    actions, covered = schedule.continuation(4 * PERIOD_NS, 16)
    assert schedule.elapsed_steps(4 * PERIOD_NS) == 4 and covered == 8
    assert np.array_equal(actions[:8], normalised[4:12]) and not actions[8:].any()
    assert schedule.first_due_ns(10, 4) == 10 + 5 * PERIOD_NS
    new = np.zeros((12, 2))
    assert schedule.boundary_jump(4 * PERIOD_NS, 4, new) == np.abs(normalised[8]).max()  # its step due then
    assert ChunkSchedule(30.0, 8, fixed_delay=2).delay_steps(16) == 2


def test_relative_prefix_is_moved_to_the_new_state():
    stats = {k: np.asarray(v) for k, v in example_stats(2, -1.0, 1.0).items()}
    normalizer = EmbodimentNormalizer(
        "arm",
        0,
        [KeyStats("arm", 2, "min_max", stats)],
        [KeyStats("arm", 2, "min_max", stats)],
        {"arm": ("arm", "non_eef")},
    )
    chunk = np.array([[0.1, -0.2], [0.3, 0.0]], dtype=np.float32)
    old, new = {"arm": np.array([0.5, 0.5])}, {"arm": np.array([0.7, 0.4])}
    moved = normalizer.rebase(chunk, old, new)
    np.testing.assert_allclose(normalizer.split_actions(moved, new)["arm"], normalizer.split_actions(chunk, old)["arm"])


def rtc_harness(checkpoint, rtc: str, node_cls=None, model_param: str = "checkpoint", **params):
    from groot_sage_ros.ros.teacher_node import TeacherNode

    h = TeacherHarness(
        f"rtc{next(_names)}",
        checkpoint,
        node_cls=node_cls or TeacherNode,
        model_param=model_param,
        **{
            "action_head.enabled": True,
            "action_head.embodiment_config": EMBODIMENT,
            "action_head.rtc": rtc,
            "action_head.execution_horizon": 8,
            "action_head.seed": 7,
            "max_frame_age_s": 30.0,
            "diagnostics_period_s": 0.2,
            **params,
        },
    )
    h.chunks, h.records = [], []
    h.probe.create_subscription(JointTrajectory, f"{h.node_name}/action_chunk/dry_run", h.chunks.append, 10)
    h.joints = h.probe.create_publisher(JointState, "joint_states", 10)
    return h


def drive(h, frames: int, stamp_offset_s: float = 0.0) -> None:
    """Seeded frame sets whose camera stamps are 5 control periods apart (each is due for a chunk with an
    execution horizon of 8 and a delay of 3), one at a time, each with a fresh joint state."""
    start = stamp_ns(h.stamp()) - 10**9
    for k in range(frames):
        state = JointState(name=JOINTS, position=[0.05 * k + 0.1 * j for j in range(6)])
        state.header.stamp = h.stamp()
        h.joints.publish(state)
        assert wait_for(
            lambda: h.node.chunks.joint_state is not None and h.node.chunks.joint_state.position[0] == state.position[0]
        )
        stamp = start + k * 5 * PERIOD_NS - int(stamp_offset_s * 1e9)
        msg_stamp = type(state.header.stamp)(sec=stamp // 10**9, nanosec=stamp % 10**9)
        previous = h.node.chunks.schedule.last  # what this frame set's chunk continues
        h.previous_positions = previous.positions.copy() if previous is not None else None
        h.publish_rgb(random_image(48, 64, k), frame_id="cam", stamp=msg_stamp)
        assert wait_for(lambda: len(h.chunks) > k)
        last = h.node.chunks.schedule.last
        h.records.append((stamp, last.normalised.copy()))


def jumps(chunks: list[JointTrajectory]) -> list[float]:
    """At each switch, the largest change of a joint's command: the new chunk's first point against the
    previous chunk's point due at the same time, as a controller splicing by time sees it."""
    out = []
    for before, after in zip(chunks, chunks[1:]):
        index = (stamp_ns(after.header.stamp) - stamp_ns(before.header.stamp)) // PERIOD_NS
        if 0 <= index < len(before.points):
            out.append(float(np.abs(np.subtract(after.points[0].positions, before.points[index].positions)).max()))
    return out


@pytest.fixture(scope="module")
def ros():
    isolate_dds()
    rclpy.init()
    yield
    rclpy.try_shutdown()


def test_node_freezes_committed_steps_and_cuts_the_boundary_jump(ros, tiny_checkpoint):
    runs = {}
    for rtc in ("prefix", "off"):
        h = rtc_harness(tiny_checkpoint, rtc, **{"action_head.delay_steps": 3})
        try:
            drive(h, 6)
            runs[rtc] = (h.chunks[:6], h.records, h.node.counters.snapshot())
        finally:
            h.close()
    chunks, records, counters = runs["prefix"]
    assert counters.get("rtc_frozen_violations", 0) == 0 and counters["action_chunks"] == 6
    for (before_stamp, before), (after_stamp, after) in zip(records, records[1:]):
        elapsed = (after_stamp + PERIOD_NS - (before_stamp + PERIOD_NS)) // PERIOD_NS
        assert np.array_equal(after[:3], before[elapsed : elapsed + 3])  # the committed steps, exactly
    # the stamping the README describes: the first published point is step 3, due (3 + 1) periods after the
    # camera stamp, and point j is due j periods after the header's stamp
    first = chunks[0]
    assert stamp_ns(first.header.stamp) == records[0][0] + 4 * PERIOD_NS and len(first.points) == 16 - 3
    times = [p.time_from_start.sec * 10**9 + p.time_from_start.nanosec for p in first.points]
    assert times[0] == 0 and all(abs(t - j * PERIOD_NS) < 1000 for j, t in enumerate(times))
    with_rtc, without = np.mean(jumps(chunks)), np.mean(jumps(runs["off"][0]))
    print(f"boundary jump, mean over 5 switches: rtc prefix {with_rtc:.4f}, off {without:.4f}")
    assert with_rtc <= 0.25 * without


def test_delay_follows_an_injected_latency(ros, tiny_checkpoint):
    h = rtc_harness(tiny_checkpoint, "prefix")
    try:
        drive(h, 3, stamp_offset_s=0.2)  # frames stamped 200 ms before they are sent: a slow camera link
        delay = h.node.chunks.schedule.delay_steps(16)
        assert delay >= 6  # ceil(>= 200 ms / 33.3 ms)
        assert len(h.chunks[-1].points) == 16 - delay
        assert wait_for(lambda: h.diag_values().get("rtc_delay_steps") == str(delay))
        assert h.diag_values()["rtc"] == "prefix" and float(h.diag_values()["chunk_latency_ms_p95"]) >= 200
    finally:
        h.close()


def test_sage_node_chunks_follow_the_schedule_through_the_teachers_head(ros, tiny_checkpoint, small_dataset, tmp_path):
    from conftest import TINY_RUN

    from groot_sage_ros.cli import main
    from groot_sage_ros.ros.student_node import StudentNode

    run = tmp_path / "run"
    assert main(["distill", str(small_dataset), "--out", str(run), *TINY_RUN]) == 0
    h = rtc_harness(
        run / "student.safetensors",
        "prefix",
        node_cls=StudentNode,
        model_param="student",
        **{"action_head.checkpoint": str(tiny_checkpoint), "action_head.delay_steps": 3},
    )
    try:
        drive(h, 3)
        assert [len(chunk.points) for chunk in h.chunks[:3]] == [13, 13, 13]
        assert h.node.counters.snapshot().get("rtc_frozen_violations", 0) == 0
        (first_stamp, first), (second_stamp, second) = h.records[:2]
        elapsed = (second_stamp - first_stamp) // PERIOD_NS
        assert np.array_equal(second[:3], first[elapsed : elapsed + 3])
    finally:
        h.close()


def test_relative_action_prefix_keeps_the_committed_motion_in_robot_units(ros, tmp_path):
    """N1.7's tiny embodiment predicts its arm relative to the current joint state: the prefix is moved to
    each new state, so the committed steps command the same absolute positions as the previous chunk (where
    the moved actions stay inside the relative statistics' range: min-max normalisation clips, so its range
    is widened here)."""
    import json

    from groot_sage_ros.families.n1_7.tiny import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "n17")
    statistics = json.loads((checkpoint / "statistics.json").read_text())
    statistics["new_embodiment"]["relative_action"]["single_arm"].update(min=[-5.0] * 5, max=[5.0] * 5)
    (checkpoint / "statistics.json").write_text(json.dumps(statistics))
    h = rtc_harness(checkpoint, "prefix", **{"action_head.delay_steps": 3})
    try:
        drive(h, 3)  # each frame set with a different joint state
        assert h.node.counters.snapshot().get("rtc_frozen_violations", 0) == 0
        policy, schedule = h.node.chunks.policy, h.node.chunks.schedule
        assert policy.normalizer.relative == {"single_arm": ("single_arm", "non_eef")}
        last = schedule.last
        (before_stamp, _), (after_stamp, _) = h.records[-2:]
        elapsed = (after_stamp - before_stamp) // PERIOD_NS
        previous_positions = h.previous_positions
        np.testing.assert_allclose(last.positions[:3], previous_positions[elapsed : elapsed + 3], atol=1e-5)
    finally:
        h.close()
