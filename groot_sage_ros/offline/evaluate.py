"""``groot-sage evaluate``: how well a student reproduces the teacher on the held-out split.

Per-token cosine and MSE (MSE on standardised features; mean, median, by image and text tokens) and the
cosine of mean-pooled sequence embeddings, for the student and two baselines computed in the same run:
the training split's mean teacher feature at each token position, and an untrained student of the same
shape. Plus parameters, batch-1 latency and memory of the student, and of the teacher when given.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cpu_threads import set_cpu_threads
from ..engine import load_engine
from ..engine.runtime import resolve_device
from ..families import by_name
from ..output_folder import OutputFolder
from ..owned_files import check_user_file, write_bytes_atomic, write_user_file
from ..student.checkpoint import load_student, resolve_student_file
from ..student.config import StudentConfig
from ..student.model import SageStudent
from .action_fidelity import action_fidelity
from .dataset import FeatureDataset
from .student_data import collate, group_of
from .training import save_figure


def check_same_teacher(
    student: SageStudent, dataset: FeatureDataset, teacher_checkpoint: str | None, allow_unknown: bool = False
) -> None:
    """The student's teacher (content hash of its weights) must be the dataset's, and ``--teacher``'s. A
    hash missing on either side (``dataset-from-bag`` datasets record none) is refused unless
    ``allow_unknown`` (``--allow-unknown-teacher``): evaluate does not vouch for what it cannot check."""
    from ..checkpoint import content_hash, read_checkpoint_files

    mine = student.cfg.teacher_content_hash
    recorded = {f"the dataset {dataset.root}": dataset.manifest["teacher"].get("content_hash")}
    if teacher_checkpoint:
        recorded[f"--teacher {teacher_checkpoint}"] = content_hash(read_checkpoint_files(teacher_checkpoint))
    for what, theirs in recorded.items():
        if not (mine and theirs) and not allow_unknown:
            unknown = "the student" if not mine else what
            raise ValueError(
                f"{unknown} records no teacher content hash, so evaluate cannot check that the student "
                "and the features come from the same teacher; pass --allow-unknown-teacher to "
                "evaluate anyway"
            )
        if mine and theirs and mine != theirs:
            raise ValueError(
                f"the student was distilled from teacher {mine[:12]}... but {what} comes from teacher "
                f"{theirs[:12]}... (content hashes of the weights); evaluate a student against its own "
                "teacher's features"
            )


def check_compatible(student: SageStudent, state: dict, dataset: FeatureDataset) -> None:
    cfg, teacher = student.cfg, dataset.manifest["teacher"]
    if cfg.facts.family != dataset.facts.family:
        raise ValueError(
            f"the student was distilled from {cfg.facts.family} features but {dataset.root} holds "
            f"{dataset.facts.family} features; evaluate a student on its own family's features"
        )
    if cfg.teacher_dim != dataset.feature_dim:
        raise ValueError(
            f"the student predicts {cfg.teacher_dim}-d features but {dataset.root} holds "
            f"{dataset.feature_dim}-d teacher features"
        )
    tokenizer = teacher.get("tokenizer", "qwen-tiktoken")
    if cfg.tokenizer != tokenizer:
        raise ValueError(f"the student was trained with tokenizer {cfg.tokenizer!r}, {dataset.root} uses {tokenizer!r}")


def held_out_indices(dataset: FeatureDataset, groups) -> tuple[list[int], list[int]]:
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError("the student checkpoint records no held-out groups (eval_groups); was it written by distill?")
    held = set(groups)
    tags = [group_of(dataset.source(i)) for i in range(len(dataset))]
    evaluation = [i for i, g in enumerate(tags) if g in held]
    if not evaluation:
        raise ValueError(
            f"empty split: none of the student's held-out groups ({sorted(held)[:5]}...) is in {dataset.root}"
        )
    return [i for i, g in enumerate(tags) if g not in held], evaluation


def check_scorable(dataset: FeatureDataset, indices: list[int]) -> None:
    """The held-out samples must hold image and text tokens: evaluate scores each kind."""
    image_id = dataset.facts.image_token_id
    kinds = set()
    for i in indices:
        ids = dataset[i]["input_ids"]
        kinds |= {"image"} if bool((ids == image_id).any()) else set()
        kinds |= {"text"} if bool((ids != image_id).any()) else set()
        if len(kinds) == 2:
            return
    missing = sorted({"image", "text"} - kinds)
    raise ValueError(
        f"the held-out samples of {dataset.root} have no {' or '.join(missing)} tokens (image token id "
        f"{image_id}); evaluate scores image and text tokens against the teacher"
    )


def position_means(dataset: FeatureDataset, indices: list[int]) -> torch.Tensor:
    """Mean teacher feature at each token position over ``indices``: (L_max, D)."""
    sums, counts = None, None
    for i in indices:
        features = dataset[i]["features"].double()  # (L, D)
        if sums is None or sums.shape[0] < features.shape[0]:
            grown = torch.zeros(features.shape[0], features.shape[1], dtype=torch.float64)
            grown_counts = torch.zeros(features.shape[0], dtype=torch.float64)
            if sums is not None:
                grown[: sums.shape[0]], grown_counts[: counts.shape[0]] = sums, counts
            sums, counts = grown, grown_counts
        sums[: features.shape[0]] += features
        counts[: features.shape[0]] += 1
    return (sums / counts.clamp(min=1).unsqueeze(1)).float()


def score(predict, dataset, indices, mean, std, device) -> dict:
    """Token and pooled metrics of ``predict(batch) -> (B, L, D)`` in teacher units."""
    cosines, mses, image_cos, text_cos, pooled = [], [], [], [], []
    with torch.no_grad():
        for start in range(0, len(indices), 8):
            data = collate([dataset[i] for i in indices[start : start + 8]], dataset.facts.pad_token_id)
            target, mask, ids = (
                data["features"].to(device).float(),
                data["mask"].to(device),
                data["input_ids"].to(device),
            )
            pred = predict(data).float().to(device)
            cosine = F.cosine_similarity(pred, target, dim=-1)  # (B, L)
            mse = (((pred - target) / std) ** 2).mean(-1)  # standardised units
            image = (ids == dataset.facts.image_token_id) & mask
            cosines += cosine[mask].tolist()
            mses += mse[mask].tolist()
            image_cos += cosine[image].tolist()
            text_cos += cosine[mask & ~image].tolist()
            weights = mask.unsqueeze(-1).float()
            pooled += F.cosine_similarity((pred * weights).sum(1), (target * weights).sum(1), dim=-1).tolist()
    return {
        "token_cosine_mean": float(np.mean(cosines)),
        "token_cosine_median": float(np.median(cosines)),
        "token_cosine_image_mean": float(np.mean(image_cos)) if image_cos else None,
        "token_cosine_text_mean": float(np.mean(text_cos)) if text_cos else None,
        "token_mse_mean": float(np.mean(mses)),
        "token_mse_median": float(np.median(mses)),
        "pooled_cosine_mean": float(np.mean(pooled)),
        "tokens": len(cosines),
        "samples": len(indices),
        "_cosines": cosines,
    }


def recorded_frame_set(dataset: FeatureDataset, index: int) -> tuple[list[np.ndarray], str]:
    """Sample ``index``'s frames (HxWx3 uint8, as the processor left them) and instruction: a frame set an
    engine takes, to time it on the data it was scored on."""
    images = [np.ascontiguousarray(f.permute(1, 2, 0).numpy()) for f in dataset[index]["images"]]
    return images, dataset.source(index)["instruction"]


def student_serving_dtype(choice: str, device: torch.device) -> str:
    """``auto``: float16 on CUDA (as sage_node serves the student), else float32; another choice as it is."""
    if choice != "auto":
        return choice
    return "float16" if device.type == "cuda" else "float32"


def latency(fn, device: torch.device, iters: int = 20) -> dict:
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    memory = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return {"batch1_ms_median": statistics.median(times), "peak_mem_gb": memory}


def run_evaluate(args) -> dict:
    device = resolve_device(args.device)  # before any pass over the data
    if getattr(args, "embodiment", None) is not None and not args.teacher:
        raise ValueError("--embodiment scores the models through the teacher's action head: pass --teacher too")
    if args.json:
        check_user_file(args.json)  # before the work, not after
    student_file = resolve_student_file(args.student)
    student, state = load_student(student_file, args.device)
    dataset = FeatureDataset(args.dataset)
    check_compatible(student, state, dataset)
    check_same_teacher(student, dataset, args.teacher, getattr(args, "allow_unknown_teacher", False))
    train, held = held_out_indices(dataset, state.get("eval_groups"))
    check_scorable(dataset, held)
    if device.type == "cpu":
        set_cpu_threads("evaluate", args.threads)
    folder = OutputFolder.claim(
        args.report_dir or student_file.parent / "evaluation",
        "evaluation",
        overwrite=True,
        option="--report-dir",
        names=("report.md", "*.png"),
    )
    try:
        return evaluate_into(args, folder.path, device, student_file, student, state, dataset, train, held)
    except BaseException:
        folder.discard_if_unused()
        raise
    finally:
        folder.release()


def evaluate_into(
    args,
    out: Path,
    device,
    student_file: Path,
    student: SageStudent,
    state: dict,
    dataset: FeatureDataset,
    train: list[int],
    held: list[int],
) -> dict:
    """The evaluation into a claimed report folder, on the split ``held_out_indices`` gave (train, held)."""
    mean, std = student.feature_mean, student.feature_std
    by_position = position_means(dataset, train or held).to(device)
    torch.manual_seed(args.seed)
    untrained = SageStudent(StudentConfig.from_dict(state["config"])).to(device).eval()
    untrained.feature_mean.copy_(mean)
    untrained.feature_std.copy_(std)

    pixels = by_name(dataset.facts.family).pixel_values

    def run(model):
        return lambda d: model.features(d["input_ids"].to(device), pixels(d["frames"].to(device)))

    def position_baseline(d):
        length = d["input_ids"].shape[1]
        table = by_position[:length]
        if table.shape[0] < length:  # positions never seen in training: the overall mean
            table = torch.cat([table, mean.expand(length - table.shape[0], -1)])
        return table.unsqueeze(0).expand(d["input_ids"].shape[0], -1, -1)

    predictors = {
        "student": run(student),
        "mean_feature_baseline": position_baseline,
        "untrained_baseline": run(untrained),
    }
    results = {name: score(fn, dataset, held, mean, std, device) for name, fn in predictors.items()}
    # Serving latency at batch 1, each model through its engine (the student's replays a CUDA graph on GPUs).
    frame_set = [recorded_frame_set(dataset, held[0])]
    dtype = student_serving_dtype(args.student_dtype, device)
    serving = load_engine(student_file, device=args.device, dtype=dtype)
    student_inputs = serving.prepare(frame_set)
    results["student"]["parameters"] = sum(p.numel() for p in student.parameters())
    results["student"]["serving_dtype"] = dtype
    results["student"].update(latency(lambda: serving.forward(student_inputs), device))
    if args.teacher:
        teacher = load_engine(
            args.teacher, device=args.device, dtype=args.teacher_dtype, action_head=args.embodiment is not None
        )
        inputs = teacher.prepare(frame_set)
        results["teacher"] = {"parameters": teacher.parameter_count, **latency(lambda: teacher.forward(inputs), device)}
        if args.embodiment is not None:  # what the teacher's action head does with each predictor's features
            policy = teacher.action_policy(args.embodiment or None)
            scores = action_fidelity(
                policy,
                predictors,
                position_baseline,
                dataset,
                held[: args.action_samples],
                dataset.facts.pad_token_id,
                list(range(args.seeds)),
                device,
            )
            for name, figures in scores.items():
                results[name].update(figures)
    report = {k: {m: v for m, v in r.items() if not m.startswith("_")} for k, r in results.items()}
    report["held_out_groups"] = len(set(state["eval_groups"]))
    if "action_error_ratio_mean" in report["student"] and args.action_ratio_gate:
        ratio = report["student"]["action_error_ratio_mean"]
        report["gate"] = {"action_error_ratio": args.action_ratio_gate, "met": ratio <= args.action_ratio_gate}
    write_report(out, report, results)
    if args.json:
        write_user_file(Path(args.json), report)
    return report


def write_report(out: Path, report: dict, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")

    save_histogram(
        out / "token_cosine.png", results, "_cosines", 50, "per-token cosine to the teacher (held out)", "tokens"
    )
    rows = [
        "| model | token cosine mean | median | image | text | token MSE mean | pooled cosine |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("student", "mean_feature_baseline", "untrained_baseline"):
        r = report[name]
        rows.append(
            f"| {name} | {r['token_cosine_mean']:.4f} | {r['token_cosine_median']:.4f} | "
            f"{r['token_cosine_image_mean']:.4f} | {r['token_cosine_text_mean']:.4f} | "
            f"{r['token_mse_mean']:.4f} | {r['pooled_cosine_mean']:.4f} |"
        )
    speed = [
        f"- student: {report['student']['parameters']:,} parameters, batch-1 "
        f"{report['student']['batch1_ms_median']:.2f} ms, peak memory {report['student']['peak_mem_gb']} GB"
    ]
    if "teacher" in report:
        speed.append(
            f"- teacher: {report['teacher']['parameters']:,} parameters, batch-1 "
            f"{report['teacher']['batch1_ms_median']:.2f} ms, peak memory {report['teacher']['peak_mem_gb']} GB"
        )
    text = [
        "# SAGE student evaluation (held-out split)",
        "",
        *rows,
        "",
        *speed,
        "",
        "![per-token cosine](token_cosine.png)",
        "",
    ]
    if "action_cosine_mean" in report["student"]:
        text += action_section(out, report, results)
    if "gate" in report:
        verdict = "met" if report["gate"]["met"] else "**not met**"
        gate = report["gate"]["action_error_ratio"]
        text += [f"Gate: the student's mean action error ratio at most {gate}: {verdict}.", ""]
    write_bytes_atomic(out / "report.md", "\n".join(text).encode())


def save_histogram(path: Path, results: dict, key: str, bins: int, xlabel: str, ylabel: str) -> None:
    """One histogram of ``results[model][key]`` (cosines in [-1, 1]) per model, overlaid."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("student", "mean_feature_baseline", "untrained_baseline"):
        ax.hist(results[name][key], bins=bins, range=(-1, 1), alpha=0.5, label=name)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def action_section(out: Path, report: dict, results: dict) -> list[str]:
    """The teacher's action head on each predictor's features: a table and a histogram of chunk cosines."""
    save_histogram(
        out / "action_cosine.png",
        results,
        "_action_cosines",
        40,
        "action chunk cosine to the teacher's (held out, per seed)",
        "chunks",
    )
    rows = [
        "## Through the teacher's action head",
        "",
        f"Chunks from the teacher's features and from each model's, same state and noise "
        f"({report['student']['action_samples']} samples x {report['student']['action_seeds']} seeds).",
        "",
        "The action error ratio is ||chunk(model) - chunk(teacher)|| / ||chunk(mean feature) - chunk(teacher)||",
        "over the embodiment's real steps and actions: 0 is the teacher, 1 no better than ignoring the frame.",
        "Cosine and relative L2 are context: most of a chunk comes from the state, the noise and the embodiment.",
        "",
        "| model | action error ratio mean | worst decile | chunk cosine mean | min | relative L2 | "
        "largest error in robot units |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("student", "mean_feature_baseline", "untrained_baseline"):
        r = report[name]
        errors = ", ".join(f"{k} {v:.4g}" for k, v in r["action_max_abs_error"].items())
        rows.append(
            f"| {name} | {r['action_error_ratio_mean']:.4f} | {r['action_error_ratio_worst_decile']:.4f} | "
            f"{r['action_cosine_mean']:.4f} | {r['action_cosine_min']:.4f} | {r['action_rel_l2_mean']:.4f} | {errors} |"
        )
    return [*rows, "", "![action chunk cosine](action_cosine.png)", ""]
