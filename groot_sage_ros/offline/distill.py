"""``groot-sage distill``: train the SAGE student to reproduce the teacher's features from a dataset.

The command: the run folder and its identity, then the training loop (``training.StudentTraining``) over
the student's data (``student_data``).

The run owns ``--out`` (``output_folder``): ``student.safetensors``, ``last.safetensors`` and ``step-N.safetensors``
(``student_checkpoint``: safetensors plus JSON, no pickle), ``metrics.jsonl`` and the plots. ``--overwrite``
deletes only those in a folder an earlier distill wrote. The folder records the run's identity
(``distill_identity``: the dataset's manifest hash and every option that changes the weights, the CPU
thread count included); ``--resume`` continues only a run of the same identity, reusing its thread count
so that a resumed run's weights equal an uninterrupted one's, and a finished run asked to resume says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import fields
from pathlib import Path

import torch

from ..cpu_threads import intra_op_threads
from ..engine.runtime import resolve_device
from ..output_folder import OutputError, OutputFolder
from ..owned_files import read_small_file
from ..student.checkpoint import RESUME_FILE, STUDENT_FILE
from .distributed import barrier, distributed, rank_device
from .training import train_student

RUN_NAMES = (STUDENT_FILE, RESUME_FILE, "step-*.safetensors", "metrics.jsonl", "timing.json", "loss.png", "cosine.png")


# DistillConfig's fields that do not change the weights (or enter the identity in another form below)
NOT_IN_IDENTITY = (
    "dataset",
    "out",
    "device",
    "resume",
    "overwrite",
    "eval_every",
    "save_every",
    "log_every",
    "threads",
)


def distill_identity(config, world: int, device: torch.device, threads: int | None) -> dict:
    """What shapes a distill run's weights: the data, every option of the objective, the optimiser, the
    schedule and the student's shape, the processes and (on the CPU) the thread count, whose sums differ
    bit for bit."""
    manifest = Path(config.dataset) / "manifest.json"
    options = {f.name: getattr(config, f.name) for f in fields(config) if f.name not in NOT_IN_IDENTITY}
    return {
        "command": "distill",
        "dataset": str(Path(config.dataset).absolute()),
        "dataset_manifest_sha256": hashlib.sha256(read_small_file(manifest, 256 << 20)).hexdigest(),
        **options,
        "processes": world,
        "device_type": device.type,
        "threads": threads,
    }


def claim_run_folder(args, out: Path, world: int, device: torch.device) -> OutputFolder:
    """Lock the run folder and settle the run's identity. A fresh run needs a new or empty folder (or
    ``--overwrite``, which deletes only an earlier run's files); ``--resume`` needs the folder's resume state
    and the same identity, and takes the earlier run's CPU thread count unless ``--threads`` names one."""
    folder = OutputFolder.claim(out, "distill_run", overwrite=args.overwrite, names=RUN_NAMES)
    try:
        if args.resume and RESUME_FILE not in folder.outputs():
            raise OutputError(
                f"--resume: no {out / RESUME_FILE} written by distill (a run saves it every --save-every steps)"
            )
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


def run_distill(args) -> dict:
    if not (args.mse_weight or args.cosine_weight or args.action_weight or args.attention_weight):
        raise ValueError(
            "--mse-weight, --cosine-weight, --action-weight and --attention-weight are all 0: nothing to learn"
        )
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
