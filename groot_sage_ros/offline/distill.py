"""``groot-sage distill``: train the SAGE student to reproduce the teacher's features from a dataset.

Targets are standardised per dimension with the training split's mean and std (stored with the student).
Loss per real token: ``mse_weight * MSE + cosine_weight * (1 - cosine)``, averaged over the batch's tokens.
AdamW, linear warm-up then cosine decay, bf16 autocast on the GPU. The held-out split is by ARC task
(``frame_id`` ``arc/<task>/<pair>``) or else by source bag, never by frame. Under torchrun each rank
takes a slice of every global batch and DDP averages the gradients, so the steps equal one process's.
The batch order is a function of (seed, step), so ``--resume`` continues the same loss curve.

The run owns ``--out`` (``output_folder``): ``student.safetensors``, ``last.safetensors`` and ``step-N.safetensors``
(``student_checkpoint``: safetensors plus JSON, no pickle), ``metrics.jsonl`` and the plots. ``--overwrite``
deletes only those in a folder an earlier distill wrote. The folder records the run's identity
(``distill_identity``: the dataset's manifest hash and every option that changes the weights, the CPU
thread count included); ``--resume`` continues only a run of the same identity, reusing its thread count
so that a resumed run's weights equal an uninterrupted one's, and a finished run asked to resume says so.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cpu_threads import intra_op_threads, set_cpu_threads
from ..engine.runtime import resolve_device
from ..families import by_name
from ..output_folder import OutputError, OutputFolder, read_identity
from ..owned_files import (
    atomic_file,
    open_append,
    read_small_file,
    write_bytes_atomic,
    write_json_atomic,
)
from ..student.checkpoint import (
    RESUME_FILE,
    STUDENT_FILE,
    StudentCheckpointError,
    load_training_state,
    save_student,
)
from ..student.config import StudentConfig
from ..student.model import SageStudent
from .action_objective import action_objective
from .dataset import FeatureDataset
from .distributed import barrier, distributed, gather_json, rank_device
from .pipeline import prefetch

RUN_NAMES = (STUDENT_FILE, RESUME_FILE, "step-*.safetensors", "metrics.jsonl", "timing.json", "loss.png", "cosine.png")
LOADER_THREADS = 4  # read and collate the next batches while the device trains on this one


def group_of(source: dict) -> str:
    """The unit of the held-out split: the ARC task, else the source bag."""
    frame_id = source.get("frame_id", "")
    return "/".join(frame_id.split("/")[:2]) if frame_id.startswith("arc/") else f"bag:{source['bag']}"


def split(dataset: FeatureDataset, eval_fraction: float, seed: int) -> tuple[list[int], list[int], list[str]]:
    """(train indices, held-out indices, held-out groups); refuses an empty side."""
    groups = [group_of(dataset.source(i)) for i in range(len(dataset))]
    unique = sorted(set(groups))
    random.Random(seed).shuffle(unique)
    held = set(unique[: max(1, round(eval_fraction * len(unique)))]) if eval_fraction > 0 else set()
    train = [i for i, g in enumerate(groups) if g not in held]
    held_out = [i for i, g in enumerate(groups) if g in held]
    if not train or (eval_fraction > 0 and not held_out):
        raise ValueError(f"empty split: {len(unique)} groups ({unique[:5]}...) give {len(train)} training and "
                         f"{len(held_out)} held-out samples; add data or change --eval-fraction")  # fmt: skip
    return train, held_out, sorted(held)


def training_stats(dataset: FeatureDataset, indices: list[int], rank: int = 0, world: int = 1,
                   device: torch.device | str = "cpu") -> tuple[list[int], torch.Tensor, torch.Tensor]:  # fmt: skip
    """One pass over ``indices``, shared by the ranks (each reads every world-th sample, the sums are
    all-reduced): the token ids they use (sorted), and the per-dimension mean and std of the teacher features
    over their real tokens."""
    dim = dataset.feature_dim
    sums = torch.zeros(2 * dim + 1, dtype=torch.float64, device=device)  # sum, sum of squares, token count
    vocab: set[int] = set()
    for i in indices[rank::world]:
        sample = dataset[i]
        vocab.update(sample["input_ids"].tolist())
        features = sample["features"].to(device).double()  # (L, D), summed on the device
        sums[:dim] += features.sum(0)
        sums[dim : 2 * dim] += (features**2).sum(0)
        sums[-1] += features.shape[0]
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(sums)
        vocab = {v for ids in gather_json(sorted(vocab), world, device) for v in ids}
    sums = sums.cpu()
    mean = sums[:dim] / sums[-1]
    std = (sums[dim : 2 * dim] / sums[-1] - mean**2).clamp(min=0).sqrt().clamp(min=1e-6)
    return sorted(vocab), mean.float(), std.float()


def collate(samples: list[dict], pad_id: int) -> dict:
    """Right-padded batch: ids (B, L) padded with ``pad_id``, features (B, L, D) float16 as stored (half the
    bytes to move; cast on the device), mask (B, L), frames (B*C, 3, S, S) uint8."""
    length = max(s["input_ids"].shape[0] for s in samples)
    dim = samples[0]["features"].shape[1]
    ids = torch.full((len(samples), length), pad_id, dtype=torch.int64)
    features = torch.zeros((len(samples), length, dim), dtype=torch.float16)
    mask = torch.zeros((len(samples), length), dtype=torch.bool)
    for row, sample in enumerate(samples):
        n = sample["input_ids"].shape[0]
        ids[row, :n], features[row, :n], mask[row, :n] = sample["input_ids"], sample["features"], True
    frames = torch.cat([s["images"] for s in samples])
    return {"input_ids": ids, "features": features, "mask": mask, "frames": frames,
            "sources": [s["source"] for s in samples]}  # fmt: skip


def token_losses(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token MSE and (1 - cosine) of standardised (B, L, D) tensors -> (B, L) each."""
    return ((pred - target) ** 2).mean(-1), 1 - F.cosine_similarity(pred, target, dim=-1)


def learning_rate(step: int, base: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def batch_indices(train: list[int], step: int, batch: int, seed: int) -> list[int]:
    """The global batch of ``step``: epochs are seeded permutations of the training indices."""
    per_epoch = max(1, len(train) // batch)
    epoch, within = divmod(step, per_epoch)
    order = np.random.default_rng(seed + epoch).permutation(len(train))
    return [train[j] for j in order[within * batch : (within + 1) * batch]] or [train[order[0]]]


def evaluate_split(model: SageStudent, dataset, indices, device, batch: int = 8) -> dict:
    """Held-out loss and per-token cosine (standardised space), overall and by token kind."""
    model.eval()
    pixels, pad_id = by_name(dataset.facts.family).pixel_values, dataset.facts.pad_token_id
    sums = {"loss": 0.0, "mse": 0.0, "cos": 0.0, "cos_image": 0.0, "cos_text": 0.0}
    counts = {"all": 0, "image": 0, "text": 0}
    with torch.no_grad():
        for start in range(0, len(indices), batch):
            data = collate([dataset[i] for i in indices[start : start + batch]], pad_id)
            ids, mask = data["input_ids"].to(device), data["mask"].to(device)
            target = (data["features"].to(device).float() - model.feature_mean) / model.feature_std
            pred = model(ids, pixels(data["frames"].to(device))).float()
            mse, cos_loss = token_losses(pred, target)
            cosine = 1 - cos_loss
            image = (ids == model.image_token_id) & mask
            text = mask & ~image
            sums["mse"] += mse[mask].sum().item()
            sums["cos"] += cosine[mask].sum().item()
            sums["cos_image"] += cosine[image].sum().item()
            sums["cos_text"] += cosine[text].sum().item()
            counts["all"] += int(mask.sum())
            counts["image"] += int(image.sum())
            counts["text"] += int(text.sum())
    model.train()
    n = max(counts["all"], 1)
    return {"eval_mse": sums["mse"] / n, "eval_cosine": sums["cos"] / n,
            "eval_cosine_image": sums["cos_image"] / max(counts["image"], 1),
            "eval_cosine_text": sums["cos_text"] / max(counts["text"], 1)}  # fmt: skip


def distill_identity(args, world: int, device: torch.device, threads: int | None) -> dict:
    """What shapes a distill run's weights: the data, every option of the objective and the optimiser, the
    student's shape, the processes and (on the CPU) the thread count, whose sums differ bit for bit."""
    manifest = Path(args.dataset) / "manifest.json"
    return {"command": "distill", "dataset": str(Path(args.dataset).absolute()),
            "dataset_manifest_sha256": hashlib.sha256(read_small_file(manifest, 256 << 20)).hexdigest(),
            **{name: getattr(args, name) for name in IDENTITY_OPTIONS}, "processes": world,
            "device_type": device.type, "threads": threads}  # fmt: skip


IDENTITY_OPTIONS = ("max_steps", "batch_size", "lr", "weight_decay", "warmup_steps", "grad_clip", "mse_weight",
                    "cosine_weight", "action_weight", "teacher", "embodiment", "eval_fraction", "seed", "width",
                    "layers", "heads")  # fmt: skip


def claim_run_folder(args, out: Path, world: int, device: torch.device) -> OutputFolder:
    """Lock the run folder and settle the run's identity. A fresh run needs a new or empty folder (or
    ``--overwrite``, which deletes only an earlier run's files); ``--resume`` needs the folder's resume state
    and the same identity, and takes the earlier run's CPU thread count unless ``--threads`` names one."""
    folder = OutputFolder.claim(out, "distill_run", overwrite=args.overwrite, names=RUN_NAMES)
    try:
        if args.resume and RESUME_FILE not in folder.outputs():
            raise OutputError(f"--resume: no {out / RESUME_FILE} written by distill (a run saves it every "
                              "--save-every steps)")  # fmt: skip
        if not args.resume and folder.outputs():
            raise OutputError(f"{out} holds a distill run; pass --resume to continue or --overwrite to start over")
        threads = None
        if device.type == "cpu":
            recorded = (folder.recorded_identity() or {}).get("threads") if args.resume else None
            threads = args.threads or recorded or intra_op_threads(processes=world)
        folder.settle_identity(distill_identity(args, world, device, threads))
    except BaseException:
        folder.discard_if_unused()
        raise
    return folder


def read_metrics(path: Path, up_to_step: int) -> list[str]:
    """The lines of ``metrics.jsonl`` up to ``up_to_step``. A torn last line (a run killed mid-write) is
    dropped; a damaged line before it is an error naming the file and the line."""
    lines = path.read_text(errors="replace").splitlines()
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            if number == len(lines):
                break
            raise ValueError(f"{path}: line {number} is not a metrics record; fix or remove the line to resume") from None
        if step <= up_to_step:
            kept.append(line)
    return kept


def copy_atomic(source: Path, target: Path) -> None:
    with atomic_file(target) as tmp:
        shutil.copyfile(source, tmp)


def run_distill(args) -> dict:
    if not (args.mse_weight or args.cosine_weight or args.action_weight):
        raise ValueError("--mse-weight, --cosine-weight and --action-weight are all 0: nothing to learn")
    rank, world, local_rank = distributed(args.device)
    device = resolve_device(rank_device(args.device, world, local_rank))  # before a pass over the data
    if args.batch_size % world:
        raise ValueError(f"--batch-size {args.batch_size} must be divisible by the {world} processes")
    out = Path(args.out)
    folder = claim_run_folder(args, out, world, device) if rank == 0 else None
    try:
        barrier(world)
        return train_student(args, out, rank, world, device)
    except BaseException:
        if folder is not None:
            folder.discard_if_unused()
        raise
    finally:
        if folder is not None:
            folder.release()


def train_student(args, out: Path, rank: int, world: int, device: torch.device) -> dict:
    """The training loop, into a claimed run folder."""
    setup = time.monotonic()
    dataset = FeatureDataset(args.dataset, verify="all")  # every shard's hash, in parallel, up front
    train, held_out, held_groups = split(dataset, args.eval_fraction, args.seed)
    resume_path = out / RESUME_FILE
    manifest = dataset.manifest
    vocab, mean, std = training_stats(dataset, train, rank, world, device)
    facts = dataset.facts
    config = StudentConfig.for_teacher(facts, dataset.feature_dim, vocab, width=args.width, layers=args.layers,
                                       heads=args.heads, teacher_checkpoint=manifest["teacher"]["checkpoint"],
                                       teacher_content_hash=manifest["teacher"].get("content_hash"),
                                       tokenizer=manifest["teacher"].get("tokenizer", "qwen-tiktoken"))  # fmt: skip
    torch.manual_seed(args.seed)
    model = SageStudent(config)
    model.feature_mean.copy_(mean)
    model.feature_std.copy_(std)
    model.to(device)
    # fused on CUDA: one kernel for the whole update instead of a dozen per parameter group (the small
    # student's steps are bound by kernel launches, not by arithmetic)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                  fused=device.type == "cuda")  # fmt: skip
    start_step = 0
    if args.resume:
        start_step = load_training_state(resume_path, model, optimizer)
        if start_step > args.max_steps:
            raise StudentCheckpointError(f"{resume_path}: metadata 'step' is {start_step}, beyond this run's "
                                         f"--max-steps {args.max_steps}")  # fmt: skip
        if start_step == args.max_steps:
            print(f"distill: {out} already finished all {args.max_steps} steps; nothing to do", file=sys.stderr)
            return {"finished_before": True, "step": start_step}
    trained = model
    if world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    metrics_path = out / "metrics.jsonl"
    if rank == 0 and args.resume and metrics_path.exists():  # drop lines past the checkpoint we resume from
        lines = read_metrics(metrics_path, start_step)
        write_bytes_atomic(metrics_path, "".join(line + "\n" for line in lines).encode())
    objective = action_objective(args, dataset, device)
    extra = {"eval_groups": held_groups, "train_size": len(train), "dataset": str(args.dataset),
             "objective": {"mse_weight": args.mse_weight, "cosine_weight": args.cosine_weight,
                           "action_weight": args.action_weight}}  # fmt: skip
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    if device.type == "cpu":  # after every check that can fail: a user error stays one line
        set_cpu_threads("distill", read_identity(out)["threads"], processes=world)  # the run's, resumed or not
    setup_s = time.monotonic() - setup  # open and verify the data, statistics, model, resume state
    started, last_metrics = time.monotonic(), {}
    # This rank's slice of each step's global batch, read and collated by threads while the device trains.
    steps = range(start_step, args.max_steps)
    pixels, pad_id = by_name(facts.family).pixel_values, facts.pad_token_id
    batches = prefetch(lambda step: collate([dataset[i] for i in batch_indices(train, step, args.batch_size,
                                                                                args.seed)[rank::world]], pad_id),
                       iter(steps), workers=LOADER_THREADS, depth=2 * LOADER_THREADS)  # fmt: skip
    data_wait, tick = 0.0, time.monotonic()
    try:
        for step, data in zip(steps, batches):
            data_wait += time.monotonic() - tick  # this rank waiting for its loader threads
            lr = learning_rate(step, args.lr, args.warmup_steps, args.max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            ids, mask = data["input_ids"].to(device), data["mask"].to(device)
            target = (data["features"].to(device).float() - model.feature_mean) / model.feature_std
            tokens = mask.sum().float()
            if world > 1:
                torch.distributed.all_reduce(tokens)
            with autocast:
                pred = trained(ids, pixels(data["frames"].to(device))).float()
            mse, cos_loss = token_losses(pred, target)
            per_token = args.mse_weight * mse + args.cosine_weight * cos_loss
            loss = per_token[mask].sum() / tokens * world  # DDP averages gradients over ranks
            action_loss = torch.zeros((), device=device)
            if objective is not None:  # this rank's samples; DDP averages over ranks
                teacher_units = data["features"].to(device).float()
                action_loss = objective.loss(pred * model.feature_std + model.feature_mean, teacher_units, mask, step)
                loss = loss + args.action_weight * action_loss
            if not torch.isfinite(loss):
                bags = sorted({f"{s['bag']}#{s.get('frame_id', '')}" for s in data["sources"]})
                raise ValueError(f"loss is {loss.item()} at step {step + 1} (batch from {bags}); stopping, the last "
                                   f"good checkpoint is {resume_path if resume_path.exists() else 'not written yet'}")  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            done = step + 1
            # the global batch's loss and metrics, summed over ranks
            logged = torch.stack([loss.detach() / world, mse[mask].sum().detach() / tokens,
                                  (1 - cos_loss[mask]).sum().detach() / tokens, action_loss.detach() / world])  # fmt: skip
            if world > 1:
                torch.distributed.all_reduce(logged)
            if rank == 0:
                record = {"step": done, "lr": lr, "loss": logged[0].item(), "train_mse": logged[1].item(),
                          "train_cosine": logged[2].item()}  # fmt: skip
                if objective is not None:
                    record["train_action_loss"] = logged[3].item()
                if held_out and (done % args.eval_every == 0 or done == args.max_steps):
                    record.update(evaluate_split(model, dataset, held_out, device))
                with open_append(metrics_path) as handle:
                    handle.write(json.dumps(record) + "\n")
                last_metrics = record
                if done % args.save_every == 0 or done == args.max_steps:
                    save_student(resume_path, model, extra, done, optimizer)
                    copy_atomic(resume_path, out / f"step-{done}.safetensors")
                rate = (done - start_step) / max(time.monotonic() - started, 1e-9)
                if done % args.log_every == 0 or done == args.max_steps:
                    print(f"distill: step {done}/{args.max_steps} loss {record['loss']:.4f} lr {lr:.2e} "
                          f"{rate:.2f} steps/s ETA {(args.max_steps - done) / rate:.0f} s", file=sys.stderr)  # fmt: skip
            tick = time.monotonic()
    finally:
        batches.close()  # stops the loader threads, also after an error
    seconds = time.monotonic() - started
    ranks = gather_json({"setup_s": round(setup_s, 2), "train_s": round(seconds, 2), "data_wait_s": round(data_wait, 2)},
                        world, device)  # fmt: skip
    if rank == 0:
        save_student(out / STUDENT_FILE, model, extra, args.max_steps)  # weights only, no optimizer state
        plot_metrics(metrics_path, out)
        seconds = max(r["train_s"] for r in ranks)
        timing = {"seconds": seconds, "processes": world, "steps": len(steps), "global_batch": args.batch_size,
                  "samples_per_s": len(steps) * args.batch_size / seconds if seconds else 0.0,
                  "rank_setup_s": [r["setup_s"] for r in ranks], "rank_train_s": [r["train_s"] for r in ranks],
                  "rank_data_wait_s": [r["data_wait_s"] for r in ranks]}  # fmt: skip
        write_json_atomic(out / "timing.json", timing)
        last_metrics = {**last_metrics, **timing}
    return last_metrics


def plot_metrics(metrics_path: Path, out: Path) -> None:
    """loss.png (train and held-out) and cosine.png (held-out per-token cosine by token kind)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    evals = [r for r in rows if "eval_cosine" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_mse"] + 1 - r["eval_cosine"] for r in evals], "o-",
                label="held-out MSE + (1 - cosine)")  # fmt: skip
    ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.legend(), ax.set_title("SAGE distillation")
    fig.tight_layout()
    save_figure(fig, out / "loss.png")
    plt.close(fig)
    if evals:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, label in (("eval_cosine", "all tokens"), ("eval_cosine_image", "image tokens"),
                           ("eval_cosine_text", "text tokens")):  # fmt: skip
            ax.plot([r["step"] for r in evals], [r[key] for r in evals], "o-", label=label)
        ax.set_xlabel("step"), ax.set_ylabel("held-out per-token cosine"), ax.legend()
        fig.tight_layout()
        save_figure(fig, out / "cosine.png")
        plt.close(fig)


def save_figure(fig, path: Path) -> None:
    """A matplotlib figure as a PNG, written atomically (and journaled) like every file of a run."""
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
