"""The fast path (compiled layers, length buckets, batch padding) computes the same function as eager.

CUDA graphs need a GPU (their numerics check runs in ``groot-sage bench --compare eager`` on the H100);
everything a graph replays is checked here on the CPU: the compiled layers, and the exactness of the
padding that lets a few graphs serve every prompt length and batch size.
"""

import threading

import numpy as np
import pytest
import torch
from conftest import random_image

from groot_sage_ros.api import ModelInputs
from groot_sage_ros.engine import RuntimeConfig, TeacherEngine
from groot_sage_ros.fastpath.compile import install_fast_path
from groot_sage_ros.fastpath.padding import pad_batch, pad_to_bucket
from groot_sage_ros.fastpath.reductions import WidePersistentReductions


@pytest.fixture(scope="module")
def compiled_engine(tiny_checkpoint, tmp_path_factory):
    runtime = RuntimeConfig(compile="on", compile_cache_dir=str(tmp_path_factory.mktemp("inductor")))
    return TeacherEngine.from_pretrained(
        tiny_checkpoint, device="cpu", dtype="float32", action_head=True, runtime=runtime
    )


def test_compiled_layers_match_eager(compiled_engine):
    engine = compiled_engine
    assert engine.compiled and not engine.graphed  # CPU: compiled on request, no graphs
    assert sum(engine.compile_cache.values()) > 0  # the warm-up really compiled (or loaded) kernels
    # the fast modules belong to the model, one per layer of each region; nothing hooks the built modules
    regions = engine.family.fast_regions(engine.model)
    assert [len(engine.model.fast[region.name]) for region in regions] == [len(region.layers) for region in regions]
    assert all(getattr(module, "_compiled_call_impl", None) is None for module in engine.model.modules())
    frame_sets = [
        ([random_image(120, 160, 1)], "pick up the cube"),
        ([random_image(90, 90, 2)], "a longer instruction that changes the prompt length"),
    ]
    inputs = engine.prepare(frame_sets)
    fast, eager = engine.forward(inputs).features, engine.forward_reference(inputs).features
    assert fast.shape == eager.shape
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-4)
    states = torch.randn(2, engine.state_width)
    chunks = engine.predict_actions(engine.forward(inputs), states, embodiment_id=3, seed=7)
    eager_chunks = engine.predict_actions(
        engine.forward_reference(inputs), states, embodiment_id=3, seed=7, reference=True
    )
    torch.testing.assert_close(chunks, eager_chunks, rtol=1e-4, atol=1e-4)


def test_a_new_prompt_length_reuses_the_programs_traced_at_warm_up(compiled_engine):
    """The regions' varying dims (batch, length) are marked dynamic: after the warm-up's prompt, a prompt of
    another length runs the backbone and the head on the programs already traced, none traced again."""
    from torch._dynamo.utils import counters

    engine = compiled_engine
    traced = counters["stats"]["unique_graphs"]
    assert traced > 0
    instruction = "stack every red block on the blue plate, then push the plate to the left edge of the table"
    result = engine.extract_batch([([random_image(64, 64, 3)], instruction)])
    assert result.features.shape[1] != engine.prepare([([random_image(64, 64, 3)], "warm up")]).input_ids.shape[1]
    engine.predict_actions(result, torch.zeros(1, engine.state_width), embodiment_id=0, seed=1)
    assert counters["stats"]["unique_graphs"] == traced


def test_regions_compile_with_one_pass_reductions(tiny_checkpoint):
    """Every region compiles with the one-pass reductions of reductions.py (a GPU heuristic: C++ code here)."""
    engine = TeacherEngine.from_pretrained(
        tiny_checkpoint, device="cpu", dtype="float32", action_head=True, warmup=False
    )
    calls = install_fast_path(engine.model, engine.family.fast_regions(engine.model), compile=True)
    assert set(calls) == {"vision", "language", "vl_self_attention", "context_kv", "dit"}
    compiled = {call.func.compiled for per_layer in calls.values() for call in per_layer}
    assert len(compiled) == len(calls)  # one compiled function per region, shared by its layers
    assert all(fn.get_compiler_config()["inductor_choices_class"] is WidePersistentReductions for fn in compiled)


def test_fast_and_reference_paths_run_side_by_side(compiled_engine):
    """No switch between the paths: each gives, from two threads at once, what it gives alone."""
    engine = compiled_engine
    inputs = engine.prepare([([random_image(100, 120, 4)], "open the drawer")])
    alone = {"fast": engine.forward(inputs).features, "reference": engine.forward_reference(inputs).features}
    assert not torch.equal(alone["fast"], alone["reference"])  # two different computations of one function
    together = {"fast": [], "reference": []}
    start = threading.Barrier(2)

    def run(name, call):
        start.wait()
        for _ in range(12):
            together[name].append(call(inputs).features)

    threads = [
        threading.Thread(target=run, args=("fast", engine.forward)),
        threading.Thread(target=run, args=("reference", engine.forward_reference)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, results in together.items():
        assert len(results) == 12 and all(torch.equal(result, alone[name]) for result in results), name


def test_fused_projections_replace_the_separate_ones_and_compute_the_same(tiny_checkpoint):
    engine = TeacherEngine.from_pretrained(
        tiny_checkpoint, device="cpu", dtype="float32", action_head=True, warmup=False
    )
    # the fused call paths, uncompiled, so hooks see every call
    calls = install_fast_path(engine.model, engine.family.fast_regions(engine.model), compile=False)
    eagle, head = engine.model.backbone.eagle_model, engine.model.action_head
    siglip, qwen = eagle.vision_model.vision_model.encoder.layers[0], eagle.language_model.model.layers[0]
    dit_self = head.model.transformer_blocks[1].attn1
    separate = [
        siglip.self_attn.q_proj,
        qwen.self_attn.k_proj,
        qwen.mlp.up_proj,
        dit_self.to_v,
        head.model.transformer_blocks[0].attn1.to_k,
    ]
    seen = []
    for linear in separate:
        linear.register_forward_hook(lambda module, args, out: seen.append(module))
    # the separate weights are views of the fused ones: stored once
    assert (
        qwen.mlp.up_proj.weight.untyped_storage().data_ptr()
        == engine.model.fast["language"][0].gate_up.weight.data_ptr()
    )
    inputs = engine.prepare([([random_image(70, 90, 3)], "stack the blocks")])
    pixels = engine.family.pixel_values(inputs.images)
    state, category, noise = torch.randn(1, 1, engine.state_width), torch.tensor([3]), torch.ones(1, 16, 32)
    masks = (inputs.attention_mask.bool(), inputs.input_ids == engine.facts.image_token_id)  # (1, L) each
    with torch.inference_mode():
        fused = engine.model.features(inputs.input_ids, pixels, calls)
        fused_chunk = engine.model.action_chunk(fused, *masks, state, category, noise, calls)
        assert seen == []  # every projection above went through a fused GEMM
        plain = engine.model.features(inputs.input_ids, pixels, None)
        plain_chunk = engine.model.action_chunk(plain, *masks, state, category, noise, None)
    assert set(map(id, seen)) == set(map(id, separate))  # the plain path uses the modules as built
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_chunk, plain_chunk, rtol=1e-5, atol=1e-5)


def test_bucket_and_batch_padding_leave_real_tokens_unchanged(tiny_engine):
    engine = tiny_engine
    assert engine.family.bucket_padding_exact
    inputs = engine.prepare([([random_image(64, 64, k)], "place the cup" + " now" * k) for k in range(3)])
    ids, images = inputs.input_ids, inputs.images  # (3, L), (3, 3, 224, 224)
    pad_id = engine.facts.pad_token_id
    padded_ids = pad_to_bucket(ids, 16, pad_id)
    assert padded_ids.shape[1] % 16 == 0 and padded_ids.shape[1] - ids.shape[1] < 16
    assert (padded_ids[:, ids.shape[1] :] == pad_id).all()
    padded_ids, padded_images = pad_batch(padded_ids, images)
    assert padded_ids.shape[0] == 4 and padded_images.shape[0] == 4  # 3 rows -> the next power of two
    reference = engine.forward_reference(inputs).features  # (3, L, D)
    padded_inputs = ModelInputs(padded_ids, (padded_ids != pad_id).long(), padded_images, inputs.layouts)
    padded = engine.forward_reference(padded_inputs).features[:3, : ids.shape[1]]
    torch.testing.assert_close(padded, reference, rtol=1e-5, atol=1e-5)


def test_pad_batch_keeps_powers_of_two_and_camera_grouping():
    ids, images = torch.arange(8).view(2, 4), torch.arange(4).view(4, 1, 1, 1)  # 2 samples, 2 cameras
    same_ids, same_images = pad_batch(ids, images)
    assert same_ids is ids and same_images is images
    ids3, images3 = torch.arange(12).view(3, 4), torch.arange(6).view(6, 1, 1, 1)
    out_ids, out_images = pad_batch(ids3, images3)
    assert out_ids[3].tolist() == ids3[2].tolist()
    assert out_images.flatten().tolist() == [0, 1, 2, 3, 4, 5, 4, 5]  # the last sample's two cameras


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"compile": "yes"}, "compile 'yes'"),
        ({"length_bucket": 0}, "length_bucket 0"),
        ({"precision": "fp4"}, "precision 'fp4'"),
    ],
)
def test_runtime_config_rejects_bad_values(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        RuntimeConfig(**kwargs)


def test_runtime_defaults_compile_and_graph_only_on_cuda():
    runtime = RuntimeConfig()
    assert not runtime.compiles_on(torch.device("cpu")) and runtime.compiles_on(torch.device("cuda"))
    assert not runtime.graphs_on(torch.device("cpu")) and runtime.graphs_on(torch.device("cuda"))
    assert not RuntimeConfig(compile="off").compiles_on(torch.device("cuda"))


def test_batched_preprocessing_equals_one_by_one(tiny_engine):
    processor = tiny_engine.processor
    frames = [random_image(100, 140, k) for k in range(3)]
    together = processor.preprocess_images(frames)  # one stack, one resize
    apart = torch.cat([processor.preprocess_images([frame]) for frame in frames])
    assert torch.equal(together, apart)
    mixed = processor.preprocess_images([frames[0], random_image(50, 70, 9)])  # different sizes
    assert mixed.shape == (2, 3, 224, 224) and mixed.dtype == torch.uint8
    assert np.array_equal(mixed[0].numpy(), together[0].numpy())


def test_rows_up_to_2048_wide_reduce_in_one_pass_in_compiled_regions():
    import sympy
    from torch._inductor.runtime.hints import ReductionHint

    from groot_sage_ros.fastpath.compile import compile_arguments
    from groot_sage_ros.fastpath.reductions import one_pass

    inner = ReductionHint.INNER
    assert one_pass(inner, False, sympy.Integer(1152)) and one_pass(inner, False, sympy.Integer(2048))  # SigLIP, Qwen3
    assert not one_pass(inner, False, sympy.Integer(4096))  # wider rows: inductor's own choice
    assert not one_pass(ReductionHint.OUTER, False, sympy.Integer(1152))  # column-wise: inductor's own choice
    assert not one_pass(inner, True, sympy.Integer(1152))  # split (cooperative) reductions too
    assert not one_pass(inner, False, sympy.Symbol("s0"))  # a dynamic width
    # every compiled region gets the heuristic, and the mode's own options are kept
    options = compile_arguments("max-autotune-no-cudagraphs")["options"]
    assert options["inductor_choices_class"] is WidePersistentReductions and options["max_autotune"]
    assert WidePersistentReductions().uuid()  # inductor's compiled-graph cache needs a key for it


def test_a_graph_cache_that_has_captured_nothing_is_still_taken_over_a_fallback():
    """``cache or fallback`` picks the cache before its first capture (it counts its graphs with len)."""
    from groot_sage_ros.fastpath.cuda_graphs import GraphCache

    cache = GraphCache(torch.neg, torch.device("cpu"))
    assert len(cache) == 0 and (cache or torch.abs) is cache
