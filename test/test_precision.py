"""Low precision on the CPU with the tiny checkpoint: int8 weights compute the dequantised weights'
arithmetic, fp8's module computes its quantised operands' product, quantize-check passes and fails as it
should, outlier channels are planted, and the precision reaches the node and its diagnostics."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_image
from safetensors.torch import load_file
from torch import nn

from groot_sage_ros.engine import RuntimeConfig, TeacherEngine
from groot_sage_ros.fastpath.compile import install_fast_path
from groot_sage_ros.fastpath.precision import (
    PRECISIONS,
    Fp8Linear,
    Int8Embedding,
    Int8WeightLinear,
    Precision,
    PrecisionOptions,
)
from groot_sage_ros.quantize_check import run_quantize_check

FRAMES = [([random_image(90, 120, 5)], "stack the red block on the blue one")]


def engine(checkpoint, precision="fp16", **kwargs):
    return TeacherEngine.from_pretrained(
        checkpoint,
        device="cpu",
        dtype="float32",
        action_head=True,
        runtime=RuntimeConfig(precision=precision, **kwargs),
    )


def region_layers(engine):
    return [layer for region in engine.family.fast_regions(engine.model) for layer in region.layers]


def test_int8_weights_compute_the_dequantised_weights_arithmetic(tiny_checkpoint):
    int8 = engine(tiny_checkpoint, "int8_weight")
    swapped = [m for layer in region_layers(int8) for m in layer.modules() if isinstance(m, Int8WeightLinear)]
    assert int8.modules_swapped == len({id(m) for m in swapped}) + 1 > 1  # and the token table
    assert not [m for layer in region_layers(int8) for m in layer.modules() if type(m) is nn.Linear]  # all swapped
    assert all(m.weight.dtype == torch.int8 and m.weight.abs().max() <= 127 for m in swapped)
    # the same model in float32 with each Linear's weight replaced by its dequantised int8 weight
    reference = engine(tiny_checkpoint)
    quantized = {
        name: module
        for name, module in int8.model.named_modules()
        if isinstance(module, (Int8WeightLinear, Int8Embedding))
    }
    assert sum(isinstance(module, Int8Embedding) for module in quantized.values()) == 1  # the token table
    with torch.no_grad():
        for name, module in reference.model.named_modules():
            if name in quantized:
                module.weight.copy_(quantized[name].dequantized_weight())
    inputs = int8.prepare(FRAMES)
    states = torch.randn(1, int8.state_width)
    # Stated tolerance: float32 rounding of the two orders of the same products (scale after vs before the GEMM).
    torch.testing.assert_close(int8.forward(inputs).features, reference.forward(inputs).features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        int8.predict_actions(int8.forward(inputs), states, 3, seed=1),
        reference.predict_actions(reference.forward(inputs), states, 3, seed=1),
        rtol=1e-5,
        atol=1e-5,
    )
    assert not torch.equal(int8.forward(inputs).features, engine(tiny_checkpoint).forward(inputs).features)


def assert_fast_features_equal_the_modules(engine, calls) -> None:
    """The fast path's callables give the features the modules as built give."""
    inputs = engine.prepare(FRAMES)
    pixels = engine.family.pixel_values(inputs.images)
    with torch.inference_mode():
        fused, plain = (
            engine.model.features(inputs.input_ids, pixels, calls),
            engine.model.features(inputs.input_ids, pixels),
        )
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


def test_fused_int8_modules_compute_what_the_separate_ones_do(tiny_checkpoint):
    engine = TeacherEngine.from_pretrained(
        tiny_checkpoint,
        device="cpu",
        dtype="float32",
        action_head=True,
        warmup=False,
        runtime=RuntimeConfig(precision="int8_weight"),
    )
    calls = install_fast_path(engine.model, engine.family.fast_regions(engine.model), compile=False)
    qkv = engine.model.fast["language"][0].qkv
    assert isinstance(qkv, Int8WeightLinear) and len(qkv.sizes) == 3
    k_proj = engine.model.backbone.eagle_model.language_model.model.layers[0].self_attn.k_proj
    assert k_proj.weight.untyped_storage().data_ptr() == qkv.weight.untyped_storage().data_ptr()  # stored once
    assert_fast_features_equal_the_modules(engine, calls)


def test_fp8_module_multiplies_its_quantised_operands():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    fp8 = Fp8Linear.from_linear(linear, PrecisionOptions(fp8_min_rows=8))
    x = torch.randn(2, 5, 64)  # 10 rows: the fp8 GEMM
    scale = x.reshape(-1, 64).abs().amax(-1, keepdim=True) / 448
    xq = (x.reshape(-1, 64) / scale).to(torch.float8_e4m3fn).float() * scale  # the activations as fp8 sees them
    expected = (xq @ fp8.dequantized_weight().float().t()).to(torch.bfloat16).float() + linear.bias
    torch.testing.assert_close(fp8(x).reshape(-1, 48), expected.detach(), rtol=1e-2, atol=1e-2)  # bf16 output
    small = x[:1, :3]  # 3 rows < min_rows: the fp8 weight widened, the activations as they are (no fp16 copy)
    torch.testing.assert_close(fp8(small), F.linear(small, fp8.dequantized_weight(), linear.bias).detach())
    assert {name for name, _ in fp8.named_buffers()} == {"weight", "scale", "bias"}  # one copy: the fp8 weight
    fused = Fp8Linear.concatenate([fp8, Fp8Linear.from_linear(nn.Linear(64, 16), PrecisionOptions(8))])
    first, _ = fused.split(x)
    torch.testing.assert_close(first, fp8(x))


KERNEL_CHECK = """
import torch
from groot_sage_ros.fastpath.weight_only_gemm import kernel_linear
for weight_dtype in (torch.int8, torch.float8_e4m3fn):
    for rows, inner, bias in ((5, 64, True), (37, 300, False)):  # 300: K not a multiple of the tile
        torch.manual_seed(rows)
        x = torch.randn(2, rows, inner)
        weight = (torch.randn(200, inner) * 60).clamp(-127, 127).to(weight_dtype)
        scale = torch.rand(200) / 50 + 1e-3
        b = torch.randn(200) if bias else None
        expected = x @ (weight.float() * scale[:, None]).t() + (b if bias else 0)
        for split in (1, 2, 4):  # K in one program, or cut in 2 or 4 shares added into the output
            out = kernel_linear(x, weight, scale, b, split=split)  # (2, rows, 200)
            torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
        print("checked", weight_dtype, rows, inner, bias)
"""


def test_weight_only_kernel_computes_the_dequantised_weights_arithmetic():
    """The Triton kernel itself, run by Triton's CPU interpreter (which must be chosen before Triton is
    imported: a process of its own). On the GPU the same source is compiled; the GPU benchmark checks it too."""
    pytest.importorskip("triton", reason="Triton is not installed (pip install -e .[test] installs it)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", KERNEL_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("checked") == 4


def test_the_kernels_int8_to_fp16_conversion_is_exact_for_every_int8():
    """The PTX the GPU kernel widens int8 weights with (``INT8_TO_FP16_PTX``; the CPU interpreter casts
    instead), run here as the byte and fp16 arithmetic it is: every int8 value, four to a 32-bit register,
    comes out as the same fp16 number. The GPU benchmark checks the compiled kernel against the reference."""
    from groot_sage_ros.fastpath import weight_only_gemm as gemm

    values = np.arange(-128, 128, dtype=np.int8)  # 64 registers of 4 bytes, byte i = element i
    registers = values.view(np.uint32) ^ np.uint32(gemm.SIGN_FLIP)  # xor.b32

    def prmt(a, b, selector):  # prmt.b32: output byte i is byte (selector's nibble i) of {b, a}
        pool = np.stack([a, np.full_like(a, b)], -1).view(np.uint8).reshape(-1, 8)  # bytes 0-3 a, 4-7 b
        picks = [(selector >> (4 * i)) & 7 for i in range(4)]
        return pool[:, picks].copy().view(np.uint32).reshape(-1)

    minus = np.array([gemm.MINUS_1152], dtype=np.uint32).view(np.float16)  # (2,) both 1152
    halves = [
        prmt(registers, gemm.HIGH_BYTE_1024, selector).view(np.float16).reshape(-1, 2) - minus  # sub.f16x2
        for selector in (gemm.LOW_PAIR, gemm.HIGH_PAIR)
    ]
    widened = np.concatenate(halves, axis=1).reshape(-1)  # (256,): elements 0-1 from $0, 2-3 from $1
    assert np.array_equal(widened, values.astype(np.float16))
    for constant in (gemm.SIGN_FLIP, gemm.HIGH_BYTE_1024, gemm.LOW_PAIR, gemm.HIGH_PAIR, gemm.MINUS_1152):
        assert f"{constant:#x}" in gemm.INT8_TO_FP16_PTX
    # only int8 into fp16, and only in calls of at most PTX_MAX_ROWS rows (wider tiles miscompiled on the GPU)
    assert gemm.ptx_widens(torch.int8, torch.float16, gemm.PTX_MAX_ROWS) == (not gemm.INTERPRETED)
    assert not gemm.ptx_widens(torch.int8, torch.float16, gemm.PTX_MAX_ROWS + 1)
    assert not gemm.ptx_widens(torch.float8_e4m3fn, torch.float16, 1) and not gemm.ptx_widens(
        torch.int8, torch.bfloat16, 1
    )


def check_args(checkpoint, precisions, actions=True):
    return argparse.Namespace(
        checkpoint=str(checkpoint),
        device="cpu",
        dtype="float32",
        actions=actions,
        embodiment=None,
        seeds=2,
        precisions=precisions,
        compile="off",
        cuda_graphs=True,
    )


def test_quantize_check_passes_int8_and_fails_a_broken_quantisation(tiny_checkpoint, monkeypatch):
    report, passed = run_quantize_check(check_args(tiny_checkpoint, ["int8_weight"]), FRAMES[0], None)
    figures = report["precisions"]["int8_weight"]
    assert passed and figures["met"] == {"features": True, "actions": True}
    assert 0.995 <= figures["token_cosine_mean"] < 1 and figures["rel_l2"] > 0
    assert set(figures["action_max_abs_error"]) == {"single_arm", "gripper"}

    def one_bit(linear, options):  # keeps only each weight's sign: a deliberately broken quantisation
        w = linear.weight.detach()
        return Int8WeightLinear(torch.sign(w).to(torch.int8), w.abs().mean(dim=1), linear.bias)

    monkeypatch.setitem(PRECISIONS, "one_bit", Precision("one_bit", one_bit, 0.995, 0.1))
    report, passed = run_quantize_check(check_args(tiny_checkpoint, ["one_bit"]), FRAMES[0], None)
    broken = report["precisions"]["one_bit"]
    assert not passed and broken["met"] == {"features": False, "actions": False}
    assert broken["action_error_ratio_mean"] > 0.1 > figures["action_error_ratio_mean"]


def test_quantize_check_command_and_fp8_refused_on_the_cpu(tiny_checkpoint, tmp_path):
    from PIL import Image

    image = tmp_path / "front.png"
    Image.fromarray(random_image(80, 100, 3)).save(image)
    base = [
        sys.executable,
        "-m",
        "groot_sage_ros.cli",
        "quantize-check",
        "--checkpoint",
        str(tiny_checkpoint),
        "--image",
        str(image),
        "--instruction",
        "pick up the cube",
        "--dtype",
        "float32",
    ]
    done = subprocess.run([*base, "--json", str(tmp_path / "qc.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("int8_weight  PASS") and json.loads((tmp_path / "qc.json").read_text())["passed"]
    refused = subprocess.run([*base, "--precision", "fp8"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "precision 'fp8' needs FP8 tensor cores" in refused.stderr and "Traceback" not in refused.stderr


def test_outlier_checkpoint_plants_large_channels_that_quantisation_feels(tiny_checkpoint, tmp_path):
    from groot_sage_ros.families import DEFAULT_FAMILY, by_name

    outliers = by_name(DEFAULT_FAMILY).write_tiny(tmp_path / "outliers", outliers=True)
    plain, planted = (load_file(str(c / "model-00001-of-00002.safetensors")) for c in (tiny_checkpoint, outliers))
    norm = "backbone.eagle_model.language_model.model.layers.0.input_layernorm.weight"
    assert plain[norm].float().abs().max() < 3 and planted[norm].float().abs().max() > 10
    untouched = "backbone.eagle_model.language_model.model.embed_tokens.weight"
    assert torch.equal(plain[untouched], planted[untouched])
    errors = [
        run_quantize_check(check_args(c, ["int8_weight"], actions=False), FRAMES[0], None)[0]["precisions"][
            "int8_weight"
        ]["rel_l2"]
        for c in (tiny_checkpoint, outliers)
    ]
    assert errors[1] > 2 * errors[0]  # the outliers make int8 weights lose more


def test_precision_reaches_the_node_and_its_diagnostics(tiny_checkpoint):
    import rclpy
    from ros_harness import TeacherHarness, isolate_dds, wait_for

    isolate_dds()
    rclpy.init()
    harness = TeacherHarness("precision", tiny_checkpoint, precision="int8_weight")
    try:
        assert harness.node.config.precision == "int8_weight"
        harness.publish_rgb(random_image(64, 64, 1))
        assert wait_for(lambda: harness.features and harness.diag_values().get("published") not in (None, "0"))
        values = harness.diag_values()
        assert values["precision"] == "int8_weight" and int(values["modules_swapped"]) > 0
        assert np.isfinite(np.frombuffer(harness.features[0].data, dtype=np.float32)).all()
    finally:
        harness.close()
        rclpy.try_shutdown()


LLM_DOWN_PROJ = "backbone.eagle_model.language_model.model.layers.1.mlp.down_proj.weight"


def plant_outlier(checkpoint, key: str, columns: int, factor: float) -> None:
    """The weight ``key`` of the checkpoint's tiny copy with its first ``columns`` columns ``factor`` times as
    large: an outlier projection that int8 weights with one scale per row feel."""
    from test_checkpoint import SHARD1, SHARD2, edit_shard

    def plant(tensors):
        tensors[key] = tensors[key].clone()
        tensors[key][:, :columns] *= factor

    edit_shard(checkpoint, SHARD2 if key.startswith("action_head.") else SHARD1, plant)


def test_sensitivity_ranks_a_planted_outlier_layer_first(tiny_copy):
    """One LLM layer's down projection gets a column 100 times the rest: int8 weights with one scale per row
    lose that layer's other columns, so quantising it alone hurts the features most."""
    plant_outlier(tiny_copy, LLM_DOWN_PROJ, 1, 100)
    args = check_args(tiny_copy, ["int8_weight"], actions=False)
    args.sensitivity = True
    report, _ = run_quantize_check(args, FRAMES[0], None)
    ranking = report["sensitivity"]
    assert ranking[0]["layer"] == "language.1"
    assert {row["layer"] for row in ranking} == {"vision.0", "vision.1", "language.0", "language.1"}
    assert ranking[0]["rel_l2"] > 2 * ranking[1]["rel_l2"]


def test_keep_fp16_reaches_the_modules_and_an_unknown_name_is_one_line(tiny_checkpoint, tmp_path, capsys):
    from PIL import Image

    from groot_sage_ros.cli import main
    from groot_sage_ros.engine import RuntimeConfig, TeacherEngine

    runtime = RuntimeConfig(precision="int8_weight", precision_keep_fp16=("down_proj", "vision.1"))
    engine = TeacherEngine.from_pretrained(tiny_checkpoint, device="cpu", dtype="float32", runtime=runtime)
    eagle = engine.model.backbone.eagle_model
    language, vision = eagle.language_model.model.layers, eagle.vision_model.vision_model.encoder.layers
    assert all(type(layer.mlp.down_proj) is torch.nn.Linear for layer in language)  # a projection kind
    assert all(isinstance(layer.mlp.up_proj, Int8WeightLinear) for layer in language)
    assert type(vision[1].mlp.fc1) is torch.nn.Linear and isinstance(vision[0].mlp.fc1, Int8WeightLinear)  # a layer
    report = engine.start_report()
    assert report["modules_kept_fp16"] == 2 + 6 and report["precision_keep_fp16"] == "down_proj,vision.1"
    Image.fromarray(random_image(32, 32)).save(tmp_path / "front.png")
    argv = ["features", "--checkpoint", str(tiny_checkpoint), "--image", str(tmp_path / "front.png")]
    argv += ["--instruction", "go", "--precision", "int8_weight", "--precision-keep-fp16", "down_porj"]
    assert main(argv + ["--dtype", "float32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "precision_keep_fp16: 'down_porj' names no layer or projection" in err


def test_auto_proposes_the_smallest_keep_set_that_passes(tiny_copy, monkeypatch):
    """With a feature gate the plain int8 run misses on a checkpoint with one planted outlier projection,
    --auto keeps the most sensitive layer, then within it that projection alone, at fp16."""
    plant_outlier(tiny_copy, LLM_DOWN_PROJ, 4, 300)
    strict = Precision("int8_weight", Int8WeightLinear.from_linear, 0.99995, 0.1)
    monkeypatch.setitem(PRECISIONS, "int8_weight", strict)
    args = check_args(tiny_copy, ["int8_weight"], actions=True)  # the ranking's loads have no head: still works
    args.auto = True
    report, passed = run_quantize_check(args, FRAMES[0], None)
    assert not passed  # the plain int8 run misses the strict gate
    auto = report["auto"]
    assert "action_error_ratio_mean" in auto  # the proposal is judged on the actions too
    assert auto["passed"] and auto["layers"] == ["language.1"]  # the first pass: the planted layer
    assert auto["precision_keep_fp16"] == ["language.1.mlp.down_proj"]  # the second: its planted projection
    assert 0 < auto["kept_weight_fraction"] < auto["layers_weight_fraction"] < 0.5
    assert auto["token_cosine_mean"] >= 0.99995


def test_in_place_trials_equal_fresh_loads_and_put_the_fp16_modules_back(tiny_checkpoint):
    """--sensitivity and --auto quantise one loaded engine per trial: each trial's outputs are those of a
    fresh load at that precision and keep set, and the trial after it sees the fp16 modules again."""
    from dataclasses import replace

    from groot_sage_ros.engine import RuntimeConfig, load_engine
    from groot_sage_ros.quantize_check import InPlaceTrials, outputs

    args = check_args(tiny_checkpoint, ["int8_weight"])
    base = RuntimeConfig.from_attributes(args)
    trials = InPlaceTrials(args, base, FRAMES[0], None, [0, 1])
    keep = ["vision.1", "down_proj"]
    try:
        for precision, kept in [("fp16", ()), ("int8_weight", keep), ("int8_weight", ()), ("fp16", ())]:
            got = trials.measure(precision, keep=kept)
            runtime = replace(base, precision=precision, precision_keep_fp16=tuple(kept))
            fresh = load_engine(tiny_checkpoint, device="cpu", dtype="float32", action_head=True, runtime=runtime)
            want = outputs(fresh, FRAMES[0], True, None, None, [0, 1])
            torch.testing.assert_close(got["features"], want["features"], rtol=1e-5, atol=1e-5)
            for a, b in zip(got["chunks"], want["chunks"]):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    finally:
        trials.close()


def test_a_fused_group_of_mixed_precision_runs_each_layer_at_its_own(tiny_checkpoint):
    """precision_keep_fp16 naming q_proj but not k_proj/v_proj: the fast path runs the group side by side
    (fp16 q, int8 k and v) and computes what the modules as built compute."""
    from groot_sage_ros.fastpath.fusion import SideBySideLinears

    runtime = RuntimeConfig(precision="int8_weight", precision_keep_fp16=("q_proj", "language.1.mlp.up_proj"))
    engine = TeacherEngine.from_pretrained(
        tiny_checkpoint, device="cpu", dtype="float32", action_head=True, warmup=False, runtime=runtime
    )
    calls = install_fast_path(engine.model, engine.family.fast_regions(engine.model), compile=False)
    qkv, gate_up = engine.model.fast["language"][0].qkv, engine.model.fast["language"][1].gate_up
    assert isinstance(qkv, SideBySideLinears) and [type(m) for m in qkv.linears] == [
        torch.nn.Linear,
        Int8WeightLinear,
        Int8WeightLinear,
    ]
    assert isinstance(gate_up, SideBySideLinears) and isinstance(
        engine.model.fast["language"][0].gate_up, Int8WeightLinear
    )
    assert_fast_features_equal_the_modules(engine, calls)


def test_auto_keeps_a_head_layer_when_the_head_moves_the_actions(tiny_copy, monkeypatch):
    """A planted outlier in one DiT projection: quantising the head alone misses the action gate while the
    features pass, so --auto ranks the head's layers by the action error each adds and keeps that projection."""
    plant_outlier(tiny_copy, "action_head.model.transformer_blocks.1.ff.net.2.weight", 4, 300)
    monkeypatch.setitem(PRECISIONS, "int8_weight", Precision("int8_weight", Int8WeightLinear.from_linear, 0.995, 0.045))
    args = check_args(tiny_copy, ["int8_weight"], actions=True)
    args.auto = True
    report, passed = run_quantize_check(args, FRAMES[0], None)
    assert not passed and report["precisions"]["int8_weight"]["met"] == {"features": True, "actions": False}
    assert report["head_sensitivity"][0]["layer"] == "dit.1"
    auto = report["auto"]
    assert auto["passed"] and auto["layers"] == ["dit.1"]
    assert auto["precision_keep_fp16"] == ["dit.1.ff.net.2"]
    assert auto["kept_weight_fraction"] == 0 and 0 < auto["head_kept_weight_fraction"] < 0.2


def test_auto_keeps_the_backbone_layer_that_moves_the_actions_when_only_the_action_gate_fails(tiny_copy, monkeypatch):
    """A planted outlier in one LLM projection, a head whose weights int8 holds exactly, a feature gate every
    trial passes and an action gate the plain int8 run misses: --auto adds layers by the action error each
    adds alone (the backbone's and the head's together), so it keeps that LLM layer, not the head's layers
    (which it used to add first whenever the features passed)."""
    from test_checkpoint import SHARD2, edit_shard

    def on_the_int8_grid(tensors):  # each row a multiple of its int8 step: quantising the head changes nothing
        for name, w in list(tensors.items()):
            if name.startswith("action_head.") and w.ndim == 2 and w.is_floating_point():
                step = (w.float().abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-12)
                tensors[name] = (torch.round(w.float() / step) * step).to(w.dtype)

    plant_outlier(tiny_copy, LLM_DOWN_PROJ, 4, 300)
    edit_shard(tiny_copy, SHARD2, on_the_int8_grid)
    monkeypatch.setitem(PRECISIONS, "int8_weight", Precision("int8_weight", Int8WeightLinear.from_linear, 0.5, 0.002))
    args = check_args(tiny_copy, ["int8_weight"], actions=True)
    args.auto = True
    report, passed = run_quantize_check(args, FRAMES[0], None)
    assert not passed and report["precisions"]["int8_weight"]["met"] == {"features": True, "actions": False}
    assert all(row["action_error_ratio_mean"] < 1e-6 for row in report["head_sensitivity"])  # the exact head
    assert report["sensitivity"][0]["layer"] == "language.1" and "action_error_ratio_mean" in report["sensitivity"][0]
    auto = report["auto"]
    assert auto["passed"] and auto["layers"] == ["language.1"]
    assert auto["head_kept_weight_fraction"] == 0
    assert all(name.startswith("language.1.") for name in auto["precision_keep_fp16"])
