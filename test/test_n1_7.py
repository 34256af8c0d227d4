"""GR00T N1.7 behind the same engine: its config, strict keys, processor, backbone (against transformers'
own Qwen3-VL forward), action head, relative actions, fast path, and the tools that carry over."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_image
from safetensors.torch import load_file

from groot_sage_ros.checkpoint import CheckpointError
from groot_sage_ros.cli import main
from groot_sage_ros.engine import TeacherEngine, load_engine
from groot_sage_ros.families import FAMILIES, detect
from groot_sage_ros.families.common.normalization import compose_poses
from groot_sage_ros.families.n1_5.config import n15_3b_config
from groot_sage_ros.families.n1_7.backbone import patchify
from groot_sage_ros.families.n1_7.config import GrootN17Config, n17_3b_config
from groot_sage_ros.families.n1_7.processor import pixel_values
from groot_sage_ros.families.n1_7.prompt import formalize
from groot_sage_ros.families.n1_7.tiny import tiny_config, write_tiny_checkpoint
from groot_sage_ros.fastpath.compile import install_fast_path

N17 = FAMILIES["gr00t_n1_7"]
SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


@pytest.fixture(scope="module")
def n17_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("n17") / "checkpoint")


@pytest.fixture(scope="module")
def n17_engine(n17_checkpoint):
    return TeacherEngine.from_pretrained(n17_checkpoint, device="cpu", dtype="float32", action_head=True)


def test_family_is_detected_from_config_json_and_sizes_are_checked():
    assert detect(n17_3b_config()).name == "gr00t_n1_7" and detect(n15_3b_config()).name == "gr00t_n1_5"
    config = GrootN17Config.from_dict(n17_3b_config())
    assert config.backbone.select_layer == 16 and config.backbone.tokens_per_image == 64
    assert config.action_head.action_horizon == 40 and config.action_head.dit_layers == 32
    assert [config.action_head.cross_attends(k) for k in range(5)] == ["text", None, "image", None, "text"]
    with pytest.raises(ValueError, match="config.json: select_layer=29 must be in 1..28"):
        GrootN17Config.from_dict({**n17_3b_config(), "select_layer": 29})
    with pytest.raises(ValueError, match="state_history_length=2"):
        GrootN17Config.from_dict({**n17_3b_config(), "state_history_length": 2})


def test_tiny_checkpoint_has_the_released_layout(n17_checkpoint):
    names = sorted(p.name for p in n17_checkpoint.iterdir() if not p.name.startswith("."))
    assert names == [
        "config.json",
        "embodiment_id.json",
        SHARD1,
        SHARD2,
        "model.safetensors.index.json",
        "processor_config.json",
        "statistics.json",
    ]
    assert json.loads((n17_checkpoint / "config.json").read_text())["model_type"] == "Gr00tN1d7"
    backbone = load_file(str(n17_checkpoint / SHARD1))
    assert "backbone.model.model.visual.deepstack_merger_list.1.linear_fc2.weight" in backbone
    assert "backbone.model.lm_head.weight" not in backbone  # tied, left out on save
    assert len({k for k in backbone if ".language_model.layers." in k and k.endswith("q_proj.weight")}) == 3


def test_missing_and_extra_keys_are_one_error_line(n17_checkpoint, tmp_path, capsys):
    def edited(name, edit):
        root = Path(shutil.copytree(n17_checkpoint, tmp_path / name))
        from test_checkpoint import edit_shard

        edit_shard(root, SHARD2, edit)
        return root

    missing = "action_head.model.transformer_blocks.2.attn1.to_k.bias"
    root = edited("missing", lambda t: t.pop(missing))
    with pytest.raises(CheckpointError, match=f"missing key: {missing}"):
        TeacherEngine.from_pretrained(root, device="cpu", dtype="float32", action_head=True, warmup=False)
    extra = "action_head.future_tokens.weight"  # N1.5's head has it, N1.7's does not
    root = edited("extra", lambda t: t.update({extra: torch.zeros(32, 48)}))
    from PIL import Image

    Image.fromarray(random_image(32, 32)).save(tmp_path / "front.png")
    argv = ["features", "--checkpoint", str(root), "--image", str(tmp_path / "front.png"), "--instruction", "go"]
    assert main(argv + ["--device", "cpu", "--dtype", "float32", "--actions"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"unexpected key: {extra}" in err


def test_prompt_and_pixels_follow_the_qwen3_vl_processor(n17_engine):
    processor = n17_engine.processor
    ids, layout = processor.encode(2, "Pick up the RED cube!")
    text = processor.tokenizer.decode(list(ids))
    image = "<|vision_start|>" + "<|image_pad|>" * 64 + "<|vision_end|>"
    assert text == f"<|im_start|>user\n{image}{image}pick up the red cube<|im_end|>\n"
    assert [b - a for a, b in layout.image_ranges] == [64, 64] and ids[layout.instruction_range[0] - 1] == 151653
    assert formalize("Put it in the bowl, then STOP.") == "put it in the bowl then stop"
    frames = processor.preprocess_images([random_image(480, 640, 1), random_image(256, 256, 2)])
    assert frames.shape == (2, 3, 256, 256) and frames.dtype == torch.uint8
    # The Qwen2-VL image processor's flattening: patches of 2x2 merge blocks, each patch the frame twice in time.
    pixels = pixel_values(frames)
    patches = patchify(pixels, 16, 2, 2)  # (2 * 256, 3 * 2 * 16 * 16)
    assert patches.shape == (512, 1536)
    block = patches[1].view(3, 2, 16, 16)  # the second patch of the first merge block: row 0, column 1
    torch.testing.assert_close(block[:, 0], pixels[0, :, 0:16, 16:32])
    torch.testing.assert_close(block[:, 1], pixels[0, :, 0:16, 16:32])
    torch.testing.assert_close(patches[2].view(3, 2, 16, 16)[:, 0], pixels[0, :, 16:32, 0:16])  # row 1, column 0


def test_backbone_equals_transformers_qwen3_vl_forward_before_the_final_norm(n17_engine):
    """The reference path against transformers' own Qwen3VLModel (M-RoPE, deepstack, position resampling,
    packed vision attention) on the same weights, feature tapped as LeRobot does: a hook on the last layer."""
    from transformers import Qwen3VLConfig, Qwen3VLModel

    engine = n17_engine
    raw = tiny_config()
    backbone = engine.model.backbone
    text = {**backbone.cfg.text_config, "num_hidden_layers": backbone.cfg.select_layer}
    config = Qwen3VLConfig(text_config=text, vision_config=backbone.cfg.vision_config, image_token_id=151655)
    config._attn_implementation = "sdpa"
    reference = Qwen3VLModel(config).eval()
    ours = {k.removeprefix("model.model."): v for k, v in backbone.state_dict().items()}
    missing, unexpected = reference.load_state_dict(ours, strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    assert raw["select_layer"] == len(reference.language_model.layers)
    frame_sets = [([random_image(120, 160, 3), random_image(90, 90, 4)], "stack the cups")]
    inputs = engine.prepare(frame_sets)
    captured = {}
    hook = reference.language_model.layers[-1].register_forward_hook(lambda m, a, out: captured.update(out=out))
    ids = inputs.input_ids
    with torch.no_grad():
        reference(
            input_ids=ids,
            attention_mask=inputs.attention_mask,
            pixel_values=patchify(pixel_values(inputs.images), 16, 2, 2),
            image_grid_thw=torch.tensor([[1, 16, 16]] * 2),
            mm_token_type_ids=(ids == 151655).int(),
        )
    hook.remove()
    expected = captured["out"][0] if isinstance(captured["out"], tuple) else captured["out"]
    ours = engine.forward_reference(inputs).features
    torch.testing.assert_close(ours, expected, rtol=2e-5, atol=2e-5)


def test_one_and_two_cameras_and_batch_rows_equal_batch_one(n17_engine):
    engine = n17_engine
    sets = [
        ([random_image(100, 120, 5)], "open the drawer"),
        ([random_image(64, 80, 6), random_image(128, 128, 7)], "a longer instruction with two cameras"),
    ]
    batch = engine.extract_batch(sets)
    for row, (images, instruction) in enumerate(sets):
        alone = engine.extract(images, instruction)
        length = alone.layout.seq_len
        assert batch.layouts[row] == alone.layout and len(alone.layout.image_ranges) == len(images)
        torch.testing.assert_close(batch.features[row, :length], alone.features[0], rtol=1e-5, atol=1e-5)


def test_fused_path_equals_reference_and_seeded_chunks_repeat(n17_checkpoint):
    engine = TeacherEngine.from_pretrained(
        n17_checkpoint, device="cpu", dtype="float32", action_head=True, warmup=False
    )
    calls = install_fast_path(engine.model, engine.family.fast_regions(engine.model), compile=False)
    assert set(calls) == {"vision", "language", "vl_self_attention", "context_kv", "dit"}
    inputs = engine.prepare([([random_image(70, 90, 8), random_image(70, 90, 9)], "wipe the table")])
    pixels = engine.family.pixel_values(inputs.images)
    masks = (inputs.attention_mask.bool(), inputs.input_ids == engine.facts.image_token_id)
    state, category = torch.randn(1, 1, engine.state_width), torch.tensor([10])
    noise = torch.randn(1, 40, 132, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        fused = engine.model.features(inputs.input_ids, pixels, calls)
        plain = engine.model.features(inputs.input_ids, pixels, None)
        fused_chunk = engine.model.action_chunk(fused, *masks, state, category, noise, calls)
        plain_chunk = engine.model.action_chunk(plain, *masks, state, category, noise, None)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_chunk, plain_chunk, rtol=1e-5, atol=1e-5)
    assert fused_chunk.shape == (1, 40, 132)
    result = engine.forward(inputs)
    states = torch.randn(1, engine.state_width)
    first, second = (engine.predict_actions(result, states, 10, seed=5) for _ in range(2))
    assert torch.equal(first, second)
    assert not torch.equal(first, engine.predict_actions(result, states, 10, seed=6))


def test_cross_attention_blocks_see_only_their_tokens(n17_engine):
    """Text blocks attend to the prompt's non-image tokens, image blocks to its image tokens: changing the
    features of image tokens moves the chunk only through the image blocks (and self-attention of the VL
    tokens, off here)."""
    engine = n17_engine
    head = engine.model.action_head
    result = engine.extract([random_image(64, 64, 1)], "lift")
    features, layout = result.features, result.layout
    token = torch.ones(1, layout.seq_len, dtype=torch.bool)
    image = torch.zeros_like(token)
    image[0, slice(*layout.image_ranges[0])] = True
    context = head.encode_context(features)
    condition = head.model.condition(context, torch.zeros(1, 1, dtype=torch.long), None, token, image)
    assert [None if m is None else int(m.sum()) for m in condition.masks] == [layout.seq_len - 64, None, 64, None]


def test_relative_actions_are_made_absolute_with_the_current_state(n17_engine):
    policy = n17_engine.action_policy("new_embodiment")
    assert policy.normalizer.relative == {"single_arm": ("single_arm", "non_eef")} and policy.normalizer.horizon == 16
    result = n17_engine.extract([random_image(64, 64, 2)], "push the block")
    normalised = policy.normalised_chunk(result, policy.zero_state(), seed=1).numpy()  # (40, 132)
    here = {"single_arm": np.zeros(5), "gripper": np.zeros(1)}
    there = {"single_arm": np.arange(5.0), "gripper": np.full(1, 0.5)}
    a, b = policy.normalizer.split_actions(normalised, here), policy.normalizer.split_actions(normalised, there)
    assert a["single_arm"].shape == (16, 5)  # the embodiment's horizon (delta_indices), not the model's 40
    np.testing.assert_allclose(b["single_arm"] - a["single_arm"], np.tile(np.arange(5.0), (16, 1)))
    np.testing.assert_array_equal(b["gripper"], a["gripper"])  # absolute
    assert np.abs(a["single_arm"]).max() <= 0.2 + 1e-9  # relative_action statistics, not the absolute ones
    with pytest.raises(ValueError, match="relative to state 'single_arm'"):
        policy.normalizer.split_actions(normalised)
    # end-effector poses: xyz + rot6d composed with the reference pose
    reference = np.array([1.0, 2.0, 3.0, 0, 1, 0, -1, 0, 0])  # a 90 degree turn about z
    step = np.array([[1.0, 0, 0, 1, 0, 0, 0, 1, 0]])  # one unit along the reference's own x
    np.testing.assert_allclose(compose_poses(reference, step), [[1.0, 1.0, 3.0, 0, 1, 0, -1, 0, 0]], atol=1e-12)


def test_processor_config_that_needs_another_transform_is_refused(n17_checkpoint, tmp_path):
    root = Path(shutil.copytree(n17_checkpoint, tmp_path / "ckpt"))
    path = root / "processor_config.json"
    config = json.loads(path.read_text())
    config["processor_kwargs"]["use_albumentations"] = True
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="processor_config.json: use_albumentations=true"):
        load_engine(root, device="cpu", dtype="float32", warmup=False)
    config["processor_kwargs"].update(use_albumentations=False, image_target_size=[224, 224])
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"image_target_size \[224, 224\].*reads 256x256 frames"):
        load_engine(root, device="cpu", dtype="float32", warmup=False)


@pytest.fixture(scope="module")
def n17_dataset(n17_checkpoint, small_bag, tmp_path_factory) -> Path:
    from conftest import extract_argv

    dataset = tmp_path_factory.mktemp("n17_dataset") / "dataset"
    argv = extract_argv(n17_checkpoint, small_bag, dataset, "--out-bag", dataset.parent / "features_bag")
    assert main([str(a) for a in argv]) == 0
    return dataset


@pytest.fixture(scope="module")
def n17_run(n17_dataset, tmp_path_factory) -> Path:
    """A student distilled on N1.7 features, with the action objective through N1.7's frozen head."""
    from conftest import TINY_RUN

    run = tmp_path_factory.mktemp("n17_run") / "run"
    argv = ["distill", str(n17_dataset), "--out", str(run), *TINY_RUN, "--action-weight", "0.5"]
    assert main(argv + ["--embodiment", "new_embodiment"]) == 0
    return run


def test_extract_distill_evaluate_and_family_checks(
    n17_checkpoint, n17_dataset, n17_run, small_dataset, tmp_path, capsys
):
    """extract, distill and evaluate on N1.7 features; an N1.5 student is refused on them in one line
    naming both families."""
    from conftest import CAMERA, TINY_RUN

    manifest = json.loads((n17_dataset / "manifest.json").read_text())
    assert manifest["tokens"]["family"] == "gr00t_n1_7" and manifest["tokens"]["tokens_per_image"] == 64
    again = tmp_path / "from_bag"  # the features the extract recorded, read back from its bag
    bag = n17_dataset.parent / "features_bag"
    assert main(["dataset-from-bag", str(bag), "--camera-topics", CAMERA, "--out", str(again)]) == 0
    recorded = json.loads((again / "manifest.json").read_text())
    assert recorded["tokens"] == manifest["tokens"] and recorded["num_samples"] == manifest["num_samples"] == 12
    student = load_engine(n17_run, device="cpu", dtype="float32")
    assert student.facts.family == "gr00t_n1_7" and student.facts.patch_grid == (8, 8)
    layout = student.extract([random_image(64, 64)], "lift the cup").layout
    assert [b - a for a, b in layout.image_ranges] == [64]
    argv = ["evaluate", "--student", str(n17_run), "--dataset", str(n17_dataset), "--teacher", str(n17_checkpoint)]
    argv += ["--embodiment", "--action-samples", "2", "--seeds", "1", "--teacher-dtype", "float32", "--device", "cpu"]
    code = main(argv + ["--report-dir", str(tmp_path / "report"), "--json", str(tmp_path / "report.json")])
    scores = json.loads((tmp_path / "report.json").read_text())
    assert "student" in json.dumps(scores) and "action" in json.dumps(scores)
    assert code == (0 if scores["gate"]["met"] else 1)  # the action gate: a tiny run's student may miss it
    n15_run = tmp_path / "n15_run"
    assert main(["distill", str(small_dataset), "--out", str(n15_run), *TINY_RUN]) == 0
    capsys.readouterr()
    argv = ["evaluate", "--student", str(n15_run), "--dataset", str(n17_dataset), "--allow-unknown-teacher"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gr00t_n1_5" in err and "gr00t_n1_7" in err


def test_quantize_check_runs_on_n1_7(n17_checkpoint):
    from test_precision import FRAMES, check_args

    from groot_sage_ros.quantize_check import run_quantize_check

    report, passed = run_quantize_check(check_args(n17_checkpoint, ["int8_weight"]), FRAMES[0], None)
    figures = report["precisions"]["int8_weight"]
    assert passed and 0.99 <= figures["token_cosine_mean"] < 1
    assert set(figures["action_max_abs_error"]) == {"single_arm", "gripper"}


def test_sage_node_serves_an_n1_7_student_behind_the_n1_7_head(n17_run, n17_checkpoint):
    import rclpy
    from ros_harness import TeacherHarness, isolate_dds, wait_for
    from sensor_msgs.msg import JointState
    from test_teacher_node import EMBODIMENT, SO100_JOINTS
    from trajectory_msgs.msg import JointTrajectory

    from groot_sage_ros.ros.student_node import StudentNode

    isolate_dds()
    rclpy.init()
    h = None
    try:
        params = {"action_head.enabled": True, "action_head.checkpoint": str(n17_checkpoint)}
        params["action_head.embodiment_config"] = EMBODIMENT
        h = TeacherHarness(
            "s17", n17_run / "student.safetensors", node_cls=StudentNode, model_param="student", **params
        )
        chunks = []
        h.probe.create_subscription(JointTrajectory, "sage_node/action_chunk/dry_run", chunks.append, 10)
        joint_pub = h.probe.create_publisher(JointState, "joint_states", 10)
        state = JointState(name=SO100_JOINTS, position=[0.1 * k for k in range(6)])
        state.header.stamp = h.stamp()
        joint_pub.publish(state)
        assert wait_for(lambda: h.node.chunks.joint_state is not None)
        h.publish_rgb(random_image(48, 64, 5), frame_id="cam")
        assert wait_for(lambda: chunks and h.layouts)
        assert json.loads(h.layouts[-1].data)["tokens"]["family"] == "gr00t_n1_7"
        assert chunks[0].joint_names == SO100_JOINTS and len(chunks[0].points) == 16
    finally:
        if h is not None:
            h.close()
        rclpy.try_shutdown()


def test_teacher_node_serves_n1_7_over_dds_with_its_chunks(n17_checkpoint, n17_engine):
    import rclpy
    from ros_harness import TeacherHarness, isolate_dds, wait_for
    from std_msgs.msg import String
    from test_teacher_node import EMBODIMENT, SO100_JOINTS, publish_joints
    from trajectory_msgs.msg import JointTrajectory

    from groot_sage_ros.ros.conversions import image_msg_to_features

    isolate_dds()
    rclpy.init()
    h = TeacherHarness(
        "n17",
        n17_checkpoint,
        **{"action_head.enabled": True, "action_head.embodiment_config": EMBODIMENT, "action_head.seed": 1},
    )
    try:
        h.chunks = []
        h.probe.create_subscription(JointTrajectory, "groot_node/action_chunk/dry_run", h.chunks.append, 10)
        from sensor_msgs.msg import JointState

        h.joint_pub = h.probe.create_publisher(JointState, "joint_states", 10)
        h.instruction_pub.publish(String(data="Pick up the cube."))
        assert wait_for(lambda: h.node._instruction == "Pick up the cube.")
        publish_joints(h)
        image = random_image(120, 160, 3)
        h.publish_rgb(image, 0, "front_link", h.stamp())
        assert wait_for(lambda: h.features and h.layouts and h.chunks)
        layout = json.loads(h.layouts[-1].data)
        assert layout["tokens"]["family"] == "gr00t_n1_7" and [b - a for a, b in layout["image_ranges"]] == [64]
        expected = n17_engine.extract([image], "Pick up the cube.").features[0].numpy()
        np.testing.assert_allclose(image_msg_to_features(h.features[0]), expected, atol=1e-4, rtol=1e-4)
        chunk = h.chunks[0]
        assert chunk.joint_names == SO100_JOINTS and len(chunk.points) == 16  # the embodiment's horizon
        assert all(np.isfinite(p.positions).all() for p in chunk.points)
    finally:
        h.close()
        rclpy.try_shutdown()


def test_isaac_layout_takes_the_backbone_from_the_model_name_folder(n17_checkpoint, n17_engine, tmp_path):
    """A GR00T folder with the action head only, its backbone in a Qwen3-VL folder (as
    Qwen3VLForConditionalGeneration saves it, all text layers) that config.json's model_name names."""
    from safetensors.torch import save_file

    backbone = {k: v for k, v in load_file(str(n17_checkpoint / SHARD1)).items()}
    cosmos = tmp_path / "cosmos"
    cosmos.mkdir()
    stored = {"model." + k.removeprefix("backbone.model.model."): v for k, v in backbone.items()}
    layer = "model.language_model.layers.2."
    stored.update({k.replace(layer, "model.language_model.layers.3."): v for k, v in stored.items() if layer in k})
    stored["lm_head.weight"] = stored["model.language_model.embed_tokens.weight"]
    save_file({k: v.contiguous().clone() for k, v in stored.items()}, str(cosmos / "model.safetensors"))
    (cosmos / "config.json").write_text(json.dumps({"architectures": ["Qwen3VLForConditionalGeneration"]}))
    groot = tmp_path / "groot"
    groot.mkdir()
    shutil.copy(n17_checkpoint / SHARD2, groot / "model.safetensors")
    for name in ("statistics.json", "processor_config.json", "embodiment_id.json"):
        shutil.copy(n17_checkpoint / name, groot / name)
    config = json.loads((n17_checkpoint / "config.json").read_text())
    (groot / "config.json").write_text(json.dumps({**config, "model_name": str(cosmos)}))
    engine = TeacherEngine.from_pretrained(groot, device="cpu", dtype="float32", action_head=True)
    image = random_image(80, 100, 4)
    torch.testing.assert_close(engine.extract([image], "go").features, n17_engine.extract([image], "go").features)
    (groot / "config.json").write_text(json.dumps({**config, "model_name": str(tmp_path / "absent")}))
    with pytest.raises(CheckpointError, match="hold no backbone weights.*absent.: no such directory"):
        TeacherEngine.from_pretrained(groot, device="cpu", dtype="float32", warmup=False)
    from groot_sage_ros.engine import load_action_head

    head = load_action_head(groot, device="cpu", dtype="float32", warmup=False)  # no backbone needed
    assert head.has_action_head and not head.model.has_backbone
