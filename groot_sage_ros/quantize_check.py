"""``groot-sage quantize-check``: a low precision against fp16 on the user's own weights and frames.

The checkpoint is loaded in fp16 and the features (and, with ``--actions``, the action chunks under the same
noise and state, for several seeds) are kept; then for each precision asked for it is loaded again at that
precision and the same outputs are compared:

- per-token feature cosine (mean and min over the prompt's tokens) and the relative L2 error;
- with the head: the action error ratio (per seed; mean and worst): how far the chunk is from fp16's, as a
  fraction of how far the chunk from features that ignore the frame is (every token given the mean of
  fp16's features), over the embodiment's real steps and actions; as context, the cosine of the
  normalised chunks and the largest error in robot units per action key.

A precision passes when its mean token cosine reaches the feature gate (NVIDIA's for its TensorRT engines:
fp8 0.99, int8_weight 0.995) and its mean action error ratio stays under the action gate (fp8 0.2,
int8_weight 0.1: the quantised backbone's effect on the actions at most a fifth, a tenth, of ignoring the
frame; chunk cosine cannot fail, as most of a chunk comes from the state, the noise and the embodiment), in
``fastpath/precision.py``; the command exits 1 when one does not. fp8 is checked on its fp8 GEMMs
whatever the batch (``fp8_min_rows=0``).

``--sensitivity`` ranks the backbone's layers by the feature error each adds when quantised alone and, with
the head, the head's layers by the action error ratio each adds; ``--auto`` proposes the smallest set kept at
fp16 that passes both gates (``auto_keep``). Their trials run on one fp16 engine quantised in place and put
back after each trial (``InPlaceTrials``): one load of the checkpoint, not one per trial.
"""

from __future__ import annotations

import gc
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .api import FeatureResult
from .engine import RuntimeConfig, load_engine
from .engine.actions import action_error_ratio
from .fastpath.precision import (
    PRECISIONS,
    PrecisionOptions,
    linear_names,
    quantize_layers,
    quantize_token_tables,
    replace_module,
)


def outputs(engine, frame_set, actions: bool, embodiment: str | None, state: dict | None, seeds: list[int]) -> dict:
    """What the check compares, on the host: features (L, D); per seed, the normalised chunk and robot units."""
    result = engine.forward(engine.prepare([frame_set]))
    out = {"features": result.features[0].float().cpu(), "chunks": [], "robot": [], "ignoring_frame": []}
    if actions:
        policy = engine.action_policy(embodiment)
        state = state if state is not None else policy.zero_state()
        mean = result.features.mean(dim=1, keepdim=True).expand_as(result.features)  # (1, L, D): no token's own
        ignoring = FeatureResult(mean, result.attention_mask, result.layouts, result.images)
        out["real"] = policy.real_actions
        for seed in seeds:  # per seed: the normalised chunk, robot units from it, and the yardstick's chunk
            out["chunks"].append(policy.normalised_chunk(result, state, seed))
            out["robot"].append(policy.normalizer.split_actions(out["chunks"][-1].numpy(), state))
            out["ignoring_frame"].append(policy.normalised_chunk(ignoring, state, seed))
    return out


def compare(reference: dict, candidate: dict) -> dict:
    ref, got = reference["features"], candidate["features"]  # (L, D)
    cosine = F.cosine_similarity(got, ref, dim=-1)  # (L,)
    report = {
        "token_cosine_mean": cosine.mean().item(),
        "token_cosine_min": cosine.min().item(),
        "rel_l2": ((got - ref).norm() / ref.norm().clamp(min=1e-12)).item(),
    }
    if reference["chunks"] and candidate["chunks"]:  # the backbone ranking's trials make no chunks
        ratios = [
            action_error_ratio(c, r, b, reference["real"])
            for c, r, b in zip(candidate["chunks"], reference["chunks"], reference["ignoring_frame"])
        ]
        report["action_error_ratio_mean"] = float(np.mean(ratios))
        report["action_error_ratio_max"] = float(np.max(ratios))
        chunk_cos = [
            F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
            for a, b in zip(candidate["chunks"], reference["chunks"])
        ]
        report["action_cosine_mean"] = float(np.mean(chunk_cos))
        report["action_cosine_min"] = float(np.min(chunk_cos))
        keys = reference["robot"][0].keys()
        report["action_max_abs_error"] = {
            key: max(float(np.abs(c[key] - r[key]).max()) for c, r in zip(candidate["robot"], reference["robot"]))
            for key in keys
        }
    return report


class InPlaceTrials:
    """The search's many trials (``--sensitivity``, ``--auto``) on one fp16 engine, quantised in place for
    each trial and put back after it: one load of the checkpoint instead of one per trial. The engine runs
    its modules as built (no compiled regions, no CUDA graphs), which computes what the fast path does."""

    def __init__(self, args, base: RuntimeConfig, frame_set, state: dict | None, seeds: list[int]):
        runtime = replace(base, precision="fp16", compile="off", cuda_graphs=False, precision_keep_fp16=())
        self.engine = load_engine(
            args.checkpoint, device=args.device, dtype=args.dtype, action_head=args.actions, runtime=runtime
        )
        self.inputs = (frame_set, args.embodiment, state, seeds)
        self.regions = self.engine.family.fast_regions(self.engine.model)
        model = self.engine.model
        head = set(model.action_head.modules()) if model.has_action_head else set()
        self.backbone_sizes, self.head_sizes = {}, {}  # Linear layer name -> its weights' element count
        self.originals = []  # (root, name, module): what each trial puts back
        for name, (layer, path) in sorted(linear_names(self.regions).items()):  # by name: ties in size keep this order
            module = layer.get_submodule(path)
            (self.head_sizes if layer in head else self.backbone_sizes)[name] = module.weight.numel()
            self.originals.append((layer, path, module))
        self.originals += [(model, name, m) for name, m in model.named_modules() if type(m) is nn.Embedding]

    def measure(self, precision: str, keep=()) -> dict:
        """The outputs with ``precision`` everywhere but ``keep``, as a fresh load at that precision gives them."""
        frame_set, embodiment, state, seeds = self.inputs
        quantize_layers(self.regions, precision, PrecisionOptions(fp8_min_rows=0), keep)
        quantize_token_tables(self.engine.model, precision)
        try:
            return outputs(self.engine, frame_set, self.engine.has_action_head, embodiment, state, seeds)
        finally:
            for root, name, module in self.originals:
                replace_module(root, name, module)

    def close(self) -> None:
        del self.engine, self.originals
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def gates_met(precision: str, report: dict) -> dict:
    spec = PRECISIONS[precision]
    met = {"features": report["token_cosine_mean"] >= spec.feature_gate}
    if "action_error_ratio_mean" in report:
        met["actions"] = report["action_error_ratio_mean"] <= spec.action_ratio_gate
    return met


def run_quantize_check(args, frame_set, state: dict | None) -> tuple[dict, bool]:
    """(report, every gate met)."""
    base = RuntimeConfig.from_attributes(args)
    seeds = list(range(args.seeds))

    def measure(precision: str) -> dict:
        runtime = replace(base, precision=precision, fp8_min_rows=0)
        engine = load_engine(
            args.checkpoint, device=args.device, dtype=args.dtype, action_head=args.actions, runtime=runtime
        )
        try:
            return {
                **outputs(engine, frame_set, args.actions, args.embodiment, state, seeds),
                "start": engine.start_report(),
            }
        finally:
            del engine
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    precisions = args.precisions or ["int8_weight"]
    ranked = getattr(args, "sensitivity", False) or getattr(args, "auto", False)
    reference = measure("fp16")
    report, passed = {"checkpoint": str(args.checkpoint), "seeds": seeds, "precisions": {}}, True
    for precision in precisions:
        candidate = measure(precision)
        figures = compare(reference, candidate)
        met = gates_met(precision, figures)
        spec = PRECISIONS[precision]
        report["precisions"][precision] = {
            **figures,
            "gates": {"features": spec.feature_gate, "action_error_ratio": spec.action_ratio_gate},
            "met": met,
            "start": candidate["start"],
        }
        passed = passed and all(met.values())
    if ranked:
        trials = InPlaceTrials(args, base, frame_set, state, seeds)
        try:  # the trials' own fp16 outputs are their reference: the same modules, quantised or not
            fp16 = {**trials.measure("fp16"), "layers": trials.backbone_sizes, "head_layers": trials.head_sizes}
            report["sensitivity"] = sensitivity(trials.measure, precisions[0], fp16)
            if trials.head_sizes:
                report["head_sensitivity"] = head_sensitivity(trials.measure, precisions[0], fp16)
            if getattr(args, "auto", False):
                rankings = (report["sensitivity"], report.get("head_sensitivity", []))
                report["auto"] = auto_keep(trials.measure, precisions[0], fp16, *rankings)
        finally:
            trials.close()
    report["passed"] = passed
    return report, passed


def auto_keep(measure, precision: str, reference: dict, ranking: list[dict], head_ranking=()) -> dict:
    """The smallest set of Linear layers that, kept at fp16, passes ``precision``'s gates, found in two passes.
    First whole layers, each time the next of the gate that fails: while the feature gate fails, the backbone's
    by the feature error each adds alone (``ranking``); while only the action gate fails, the backbone's and the
    head's together by the action error ratio each adds alone (a quantised head moves the actions on its own,
    and the layers that move the features most are not those that move the actions most); then whichever is
    left. Second, within those layers, each projection quantised again, largest first, where the gates still
    pass. Returns the names for ``precision_keep_fp16`` (projections, e.g.
    ``vision.0.mlp.fc2``), the share of the backbone's (and the head's) Linear weights they hold, the
    layer-level set and its share, and the figures with them kept (``passed`` false when even every layer
    kept misses a gate)."""
    head_sizes = reference.get("head_layers", {})
    sizes = {**reference["layers"], **head_sizes}
    by_features = [row["layer"] for row in ranking]
    moving = [row for row in [*ranking, *head_ranking] if "action_error_ratio_mean" in row]
    by_actions = [row["layer"] for row in sorted(moving, key=lambda row: -row["action_error_ratio_mean"])]
    everything = by_features + [row["layer"] for row in head_ranking]
    layers, figures = [], compare(reference, measure(precision, keep=[]))
    met = gates_met(precision, figures)
    while not all(met.values()):
        order = by_features if not met["features"] else by_actions
        left = [layer for layer in order + everything if layer not in layers]
        if not left:
            break
        layers.append(left[0])
        figures = compare(reference, measure(precision, keep=layers))
        met = gates_met(precision, figures)
    keep = list(layers)
    if layers and all(met.values()):  # the second pass: projection by projection, the largest first
        keep = sorted((n for n in sizes if any(n.startswith(layer + ".") for layer in layers)), key=lambda n: -sizes[n])
        for name in list(keep):
            trial = [n for n in keep if n != name]
            trial_figures = compare(reference, measure(precision, keep=trial))
            if all(gates_met(precision, trial_figures).values()):
                keep, figures = trial, trial_figures
    met = gates_met(precision, figures)

    def share(names, of: dict) -> float:
        kept = sum(n for name, n in of.items() if any(name == k or name.startswith(k + ".") for k in names))
        return kept / max(1, sum(of.values()))

    return {
        "precision_keep_fp16": keep,
        "kept_weight_fraction": share(keep, reference["layers"]),  # of the backbone's Linear weights
        "head_kept_weight_fraction": share(keep, head_sizes) if head_sizes else 0.0,
        "layers": layers,
        "layers_weight_fraction": share(layers, reference["layers"]),
        "passed": all(met.values()),
        "met": met,
        **figures,
    }


def layer_groups(names) -> list[str]:
    """``vision.3.mlp.fc1`` -> ``vision.3``: the layers the names belong to, in model order."""
    groups = {".".join(name.split(".")[:2]) for name in names}
    return sorted(groups, key=lambda g: (g.split(".")[0], int(g.split(".")[1])))


def sensitivity(measure, precision: str, reference: dict) -> list[dict]:
    """The backbone's layers, most sensitive first: each quantised alone (every other Linear kept at fp16),
    with the feature error it adds against fp16 (relative L2, mean token cosine) and, with the head, the
    action error ratio it adds (what ``auto_keep`` ranks by while only the action gate fails)."""
    layers = reference["layers"]
    everything = [*layers, *reference.get("head_layers", {})]  # the head at fp16 too: the layer's own effect
    ranking = []
    for group in layer_groups(layers):
        others = [name for name in everything if not name.startswith(group + ".")]
        figures = compare(reference, measure(precision, keep=others))
        row = {"layer": group, "rel_l2": figures["rel_l2"], "token_cosine_mean": figures["token_cosine_mean"]}
        if "action_error_ratio_mean" in figures:
            row["action_error_ratio_mean"] = figures["action_error_ratio_mean"]
        ranking.append(row)
    return sorted(ranking, key=lambda row: -row["rel_l2"])


def head_sensitivity(measure, precision: str, reference: dict) -> list[dict]:
    """The action head's layers, most sensitive first: each quantised alone (the backbone and every other
    head layer at fp16), with the action error ratio it adds."""
    everything = [*reference["layers"], *reference["head_layers"]]
    ranking = []
    for group in layer_groups(reference["head_layers"]):
        others = [name for name in everything if not name.startswith(group + ".")]
        figures = compare(reference, measure(precision, keep=others))
        ranking.append({"layer": group, "action_error_ratio_mean": figures["action_error_ratio_mean"]})
    return sorted(ranking, key=lambda row: -row["action_error_ratio_mean"])


def print_report(report: dict) -> None:
    if "auto" in report:
        auto = report["auto"]
        verdict = "passes" if auto["passed"] else "still fails"
        print(
            f"auto         keep {auto['precision_keep_fp16'] or 'nothing'} at fp16 "
            f"({auto['kept_weight_fraction']:.1%} of the backbone's Linear weights, "
            f"{auto['head_kept_weight_fraction']:.1%} of the head's; whole layers "
            f"{auto['layers'] or 'none'}: {auto['layers_weight_fraction']:.1%}): {verdict} the gates"
        )
    for row in report.get("sensitivity", [])[:10]:
        print(
            f"sensitivity  {row['layer']:16s} rel L2 {row['rel_l2']:.5f}  token cosine {row['token_cosine_mean']:.5f}"
        )
    for row in report.get("head_sensitivity", [])[:5]:
        print(f"sensitivity  {row['layer']:16s} action error ratio {row['action_error_ratio_mean']:.5f}")
    for precision, figures in report["precisions"].items():
        verdict = "PASS" if all(figures["met"].values()) else "FAIL"
        print(
            f"{precision:12s} {verdict}  token cosine mean {figures['token_cosine_mean']:.5f} "
            f"(gate {figures['gates']['features']}), min {figures['token_cosine_min']:.5f}, "
            f"rel L2 {figures['rel_l2']:.4f}"
        )
        if "action_error_ratio_mean" in figures:
            errors = ", ".join(f"{k} {v:.4g}" for k, v in figures["action_max_abs_error"].items())
            print(
                f"{'':12s}       action error ratio mean {figures['action_error_ratio_mean']:.4f} "
                f"(gate {figures['gates']['action_error_ratio']}), max {figures['action_error_ratio_max']:.4f}; "
                f"chunk cosine mean {figures['action_cosine_mean']:.5f}; largest error in robot units: {errors}"
            )


def write_json(path: str, report: dict) -> None:
    from pathlib import Path

    from .owned_files import write_user_file

    write_user_file(Path(path), report)  # never through a link, never over an output of ours
