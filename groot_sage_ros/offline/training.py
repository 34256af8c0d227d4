"""The student's training loop in its pieces: ``StudentTraining.start`` (data, statistics, model,
optimiser, resume state), ``step`` (one optimiser step on a batch), ``record`` (metrics, held-out
evaluation, checkpoints, progress) and ``finish`` (the student file, plots, timing).

Loss per real token: ``mse_weight * MSE + cosine_weight * (1 - cosine)`` on standardised features (the
training split's mean and std, stored with the student), averaged over the batch's tokens, plus
``action_weight`` times the action objective and ``attention_weight`` times the attention transfer
(``attention_loss``: the last block's attention from text to image tokens against the teacher's). AdamW,
linear warm-up then cosine decay, bf16 autocast on the GPU. Under torchrun DDP averages the gradients, so
the steps equal one process's.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from ..cpu_threads import set_cpu_threads
from ..families import by_name
from ..families.common.attention_maps import image_columns
from ..output_folder import read_identity
from ..owned_files import atomic_file, open_append, write_bytes_atomic, write_json_atomic
from ..student.checkpoint import RESUME_FILE, STUDENT_FILE, StudentCheckpointError, load_training_state, save_student
from ..student.config import StudentConfig
from ..student.model import SageStudent
from .action_objective import action_objective
from .dataset import FeatureDataset
from .distributed import gather_json
from .student_data import LOADER_THREADS, batch_indices, collate, pin, split, to_device, training_stats


def token_losses(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token MSE and (1 - cosine) of standardised (B, L, D) tensors -> (B, L) each."""
    return ((pred - target) ** 2).mean(-1), 1 - F.cosine_similarity(pred, target, dim=-1)


def attention_loss(
    student: torch.Tensor, teacher: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor, image_token_id: int
) -> torch.Tensor:
    """KL(teacher || student) of each text token's attention over the image tokens, each side normalised
    over them, averaged over the real text tokens that follow an image (the others see none).
    student (B, L, L) the last block's weights; teacher (B, L, T) as extract --attention stores it."""
    image = input_ids == image_token_id  # (B, L)
    to_images = image_columns(student, image)  # (B, L, T)
    p = teacher.float() / teacher.float().sum(-1, keepdim=True).clamp(min=1e-12)
    q = to_images / to_images.sum(-1, keepdim=True).clamp(min=1e-12)
    kl = (p * (p.clamp(min=1e-12).log() - q.clamp(min=1e-12).log())).sum(-1)  # (B, L)
    rows = mask & ~image & (teacher.float().sum(-1) > 0)
    return (kl * rows).sum() / rows.sum().clamp(min=1)  # 0 where no text token sees an image


def learning_rate(step: int, base: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


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
    return {
        "eval_mse": sums["mse"] / n,
        "eval_cosine": sums["cos"] / n,
        "eval_cosine_image": sums["cos_image"] / max(counts["image"], 1),
        "eval_cosine_text": sums["cos_text"] / max(counts["text"], 1),
    }


@dataclass
class StudentTraining:
    """One distill run's state, from ``start`` to ``finish``, on one rank."""

    config: object  # DistillConfig
    out: Path
    rank: int
    world: int
    device: torch.device
    dataset: FeatureDataset
    train: list[int]
    held_out: list[int]
    model: SageStudent
    trained: torch.nn.Module  # the model, or DDP around it
    optimizer: torch.optim.Optimizer
    objective: object | None  # the action objective, with --action-weight
    extra: dict  # what the student file records besides its config
    start_step: int
    setup_s: float
    started: float = field(default_factory=time.monotonic)
    metrics: object = None  # metrics.jsonl, open for appending once the first record is written

    @property
    def resume_path(self) -> Path:
        return self.out / RESUME_FILE

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    @classmethod
    def start(cls, config, out: Path, rank: int, world: int, device: torch.device) -> "StudentTraining | None":
        """Open and verify the data, the statistics, the model and optimiser, the resume state; None when the
        run being resumed has already done all its steps (it says so)."""
        setup = time.monotonic()
        dataset = FeatureDataset(config.dataset, verify="all")  # every shard's hash, in parallel, up front
        if config.attention_weight and not dataset.has_attention:
            raise ValueError(
                f"--attention-weight {config.attention_weight}: {dataset.root} holds no teacher attention; "
                "extract it with --attention"
            )
        train, held_out, held_groups = split(dataset, config.eval_fraction, config.seed)
        vocab, mean, std = training_stats(dataset, train, rank, world, device)
        teacher = dataset.manifest["teacher"]
        student = StudentConfig.for_teacher(
            dataset.facts,
            dataset.feature_dim,
            vocab,
            width=config.width,
            layers=config.layers,
            heads=config.heads,
            teacher_checkpoint=teacher["checkpoint"],
            teacher_content_hash=teacher.get("content_hash"),
            tokenizer=teacher.get("tokenizer", "qwen-tiktoken"),
        )
        torch.manual_seed(config.seed)
        model = SageStudent(student)
        model.feature_mean.copy_(mean)
        model.feature_std.copy_(std)
        model.to(device)
        # fused on CUDA: one kernel for the whole update instead of a dozen per parameter group (the small
        # student's steps are bound by kernel launches, not by arithmetic)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=device.type == "cuda"
        )
        start_step = resume_step(config, out, model, optimizer) if config.resume else 0
        if start_step == config.max_steps:
            print(f"distill: {out} already finished all {config.max_steps} steps; nothing to do", file=sys.stderr)
            return None
        trained = model
        if world > 1:
            trained = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if rank == 0 and config.resume and (out / "metrics.jsonl").exists():  # drop lines past the resumed step
            lines = read_metrics(out / "metrics.jsonl", start_step)
            write_bytes_atomic(out / "metrics.jsonl", "".join(line + "\n" for line in lines).encode())
        objective = action_objective(config, dataset, device)
        extra = {
            "eval_groups": held_groups,
            "train_size": len(train),
            "dataset": str(config.dataset),
            "objective": {
                "mse_weight": config.mse_weight,
                "cosine_weight": config.cosine_weight,
                "action_weight": config.action_weight,
                "action_samples_per_step": config.action_samples_per_step,
                "attention_weight": config.attention_weight,
            },
        }
        if device.type == "cpu":  # after every check that can fail: a user error stays one line
            set_cpu_threads("distill", read_identity(out)["threads"], processes=world)  # the run's, resumed or not
        return cls(
            config,
            out,
            rank,
            world,
            device,
            dataset,
            train,
            held_out,
            model,
            trained,
            optimizer,
            objective,
            extra,
            start_step,
            time.monotonic() - setup,
        )

    def batches(self):
        """This rank's slice of each step's global batch, read and collated by threads while the device trains."""
        from .pipeline import prefetch

        cfg, pad_id = self.config, self.dataset.facts.pad_token_id

        def load(step: int) -> dict:
            indices = batch_indices(self.train, step, cfg.batch_size, cfg.seed)[self.rank :: self.world]
            batch = collate([self.dataset[i] for i in indices], pad_id)
            return pin(batch) if self.device.type == "cuda" else batch

        return prefetch(
            load, iter(range(self.start_step, cfg.max_steps)), workers=LOADER_THREADS, depth=2 * LOADER_THREADS
        )

    def step(self, step: int, data: dict) -> torch.Tensor:
        """One optimiser step on this rank's batch; returns the global batch's (loss, MSE, cosine, action
        loss), summed over ranks. Queued without a wait for the GPU (masked sums, not masked selections; the
        batch already in pinned memory on CUDA): the host runs ahead while the device computes."""
        cfg, model, device, world = self.config, self.model, self.device, self.world
        lr = learning_rate(step, cfg.lr, cfg.warmup_steps, cfg.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        data = to_device(data, device)
        ids, mask, features = data["input_ids"], data["mask"], data["features"].float()  # (B, L), (B, L, D)
        target = (features - model.feature_mean) / model.feature_std  # (B, L, D) standardised
        real = mask.float()  # (B, L)
        tokens = real.sum()
        if world > 1:
            torch.distributed.all_reduce(tokens)
        pixels = by_name(self.dataset.facts.family).pixel_values
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
        with record_function("distill/student_forward"), autocast:
            if cfg.attention_weight:
                pred, weights = self.trained(ids, pixels(data["frames"]), attention=True)  # (B, L, L)
            else:
                pred = self.trained(ids, pixels(data["frames"]))
        pred = pred.float()  # (B, L, D) standardised
        mse, cos_loss = token_losses(pred, target)  # (B, L) each
        loss = ((cfg.mse_weight * mse + cfg.cosine_weight * cos_loss) * real).sum() / tokens * world  # DDP averages
        attention = torch.zeros((), device=device)
        if cfg.attention_weight:  # this rank's samples; DDP averages over ranks
            image_id = self.dataset.facts.image_token_id
            attention = attention_loss(weights.float(), data["attention"], ids, mask, image_id)
            loss = loss + cfg.attention_weight * attention
        action_loss = torch.zeros((), device=device)
        if self.objective is not None:  # this rank's samples; DDP averages over ranks
            with record_function("distill/action_objective"):
                image_mask = ids == self.dataset.facts.image_token_id  # (B, L)
                student_units = pred * model.feature_std + model.feature_mean
                action_loss = self.objective.loss(student_units, features, mask, image_mask, step)
            loss = loss + cfg.action_weight * action_loss
        with record_function("distill/backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("distill/optimizer"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.optimizer.step()
        logged = torch.stack(
            [
                loss.detach() / world,
                (mse * real).sum().detach() / tokens,
                ((1 - cos_loss) * real).sum().detach() / tokens,
                action_loss.detach() / world,
                attention.detach() / world,
            ]
        )
        if world > 1:
            torch.distributed.all_reduce(logged)
        return logged

    def check_finite(self, step: int, data: dict, logged: torch.Tensor) -> None:
        """After the step (one wait for the GPU per step, here rather than mid-step): a loss that is not finite
        stops the run on every rank (``logged`` is summed over ranks) before anything of this step is written."""
        if not torch.isfinite(logged[0]):
            bags = sorted({f"{s['bag']}#{s.get('frame_id', '')}" for s in data["sources"]})
            last = self.resume_path if self.resume_path.exists() else "not written yet"
            raise ValueError(
                f"loss is {logged[0].item()} at step {step + 1} (batch from {bags}); stopping, the "
                f"last good checkpoint is {last}"
            )

    def record(self, done: int, logged: torch.Tensor) -> dict:
        """On rank 0 after step ``done``: the metrics line (with the held-out evaluation when due), the resume
        state and a step copy when due, and a progress line."""
        cfg = self.config
        record = {
            "step": done,
            "lr": learning_rate(done - 1, cfg.lr, cfg.warmup_steps, cfg.max_steps),
            "loss": logged[0].item(),
            "train_mse": logged[1].item(),
            "train_cosine": logged[2].item(),
        }
        if self.objective is not None:
            record["train_action_loss"] = logged[3].item()
        if cfg.attention_weight:
            record["train_attention_loss"] = logged[4].item()
        last = done == cfg.max_steps
        if self.held_out and (done % cfg.eval_every == 0 or last):
            record.update(evaluate_split(self.model, self.dataset, self.held_out, self.device))
        if self.metrics is None:  # opened once (checked and journaled then), not at every step
            self.metrics = open_append(self.metrics_path)
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        if done % cfg.save_every == 0 or last:
            save_student(self.resume_path, self.model, self.extra, done, self.optimizer)
            copy_atomic(self.resume_path, self.out / f"step-{done}.safetensors")
        if done % cfg.log_every == 0 or last:
            rate = (done - self.start_step) / max(time.monotonic() - self.started, 1e-9)
            print(
                f"distill: step {done}/{cfg.max_steps} loss {record['loss']:.4f} lr {record['lr']:.2e} "
                f"{rate:.2f} steps/s ETA {(cfg.max_steps - done) / rate:.0f} s",
                file=sys.stderr,
            )
        return record

    def finish(self, data_wait_s: float) -> dict:
        """The student file, the plots and timing.json (rank 0; every rank reports its timing)."""
        cfg, seconds = self.config, time.monotonic() - self.started
        ranks = gather_json(
            {"setup_s": round(self.setup_s, 2), "train_s": round(seconds, 2), "data_wait_s": round(data_wait_s, 2)},
            self.world,
            self.device,
        )
        if self.rank != 0:
            return {}
        self.close()
        save_student(self.out / STUDENT_FILE, self.model, self.extra, cfg.max_steps)  # weights only
        plot_metrics(self.metrics_path, self.out)
        seconds, steps = max(r["train_s"] for r in ranks), cfg.max_steps - self.start_step
        timing = {
            "seconds": seconds,
            "processes": self.world,
            "steps": steps,
            "global_batch": cfg.batch_size,
            "samples_per_s": steps * cfg.batch_size / seconds if seconds else 0.0,
            "rank_setup_s": [r["setup_s"] for r in ranks],
            "rank_train_s": [r["train_s"] for r in ranks],
            "rank_data_wait_s": [r["data_wait_s"] for r in ranks],
        }
        write_json_atomic(self.out / "timing.json", timing)
        return timing

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None


def resume_step(config, out: Path, model: SageStudent, optimizer) -> int:
    """Fill ``model`` and ``optimizer`` from the run's resume state; the step it was saved at."""
    path = out / RESUME_FILE
    step = load_training_state(path, model, optimizer)
    if step > config.max_steps:
        raise StudentCheckpointError(
            f"{path}: metadata 'step' is {step}, beyond this run's --max-steps {config.max_steps}"
        )
    return step


def train_student(config, out: Path, rank: int, world: int, device: torch.device) -> dict:
    """The training loop, into a claimed run folder: the last metrics and the timing (rank 0)."""
    run = StudentTraining.start(config, out, rank, world, device)
    if run is None:
        return {"finished_before": True, "step": config.max_steps}
    batches, last, data_wait, tick = run.batches(), {}, 0.0, time.monotonic()
    try:
        for step, data in zip(range(run.start_step, config.max_steps), batches):
            data_wait += time.monotonic() - tick  # this rank waiting for its loader threads
            logged = run.step(step, data)
            run.check_finite(step, data, logged)
            if rank == 0:
                last = run.record(step + 1, logged)
            tick = time.monotonic()
    except BaseException:
        run.close()
        raise
    finally:
        batches.close()  # stops the loader threads, also after an error
    return {**last, **run.finish(data_wait)}


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
            raise ValueError(
                f"{path}: line {number} is not a metrics record; fix or remove the line to resume"
            ) from None
        if step <= up_to_step:
            kept.append(line)
    return kept


def copy_atomic(source: Path, target: Path) -> None:
    with atomic_file(target) as tmp:
        shutil.copyfile(source, tmp)


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
        ax.plot(
            [r["step"] for r in evals],
            [r["eval_mse"] + 1 - r["eval_cosine"] for r in evals],
            "o-",
            label="held-out MSE + (1 - cosine)",
        )
    ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.legend(), ax.set_title("SAGE distillation")
    fig.tight_layout()
    save_figure(fig, out / "loss.png")
    plt.close(fig)
    if evals:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, label in (
            ("eval_cosine", "all tokens"),
            ("eval_cosine_image", "image tokens"),
            ("eval_cosine_text", "text tokens"),
        ):
            ax.plot([r["step"] for r in evals], [r[key] for r in evals], "o-", label=label)
        ax.set_xlabel("step"), ax.set_ylabel("held-out per-token cosine"), ax.legend()
        fig.tight_layout()
        save_figure(fig, out / "cosine.png")
        plt.close(fig)


def save_figure(fig, path: Path) -> None:
    """A matplotlib figure as a PNG, written atomically (and journaled) like every file of a run."""
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
