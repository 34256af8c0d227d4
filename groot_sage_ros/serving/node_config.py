"""The nodes' configuration: one dataclass per node, every ROS parameter one-to-one with a field.

Defaults, descriptions, ranges and read-only flags live here only; ``ros/params.py`` declares the ROS
parameters from these fields, and ``config/groot.yaml`` lists them for launches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..api import PRECISION_NAMES
from .instructions import MAX_INSTRUCTION_CHARS


def param(
    default,
    description: str,
    read_only: bool = False,
    range: tuple | None = None,
    choices=None,
    ros_name: str | None = None,
):
    meta = {
        "description": description,
        "read_only": read_only,
        "range": range,
        "choices": choices,
        "ros_name": ros_name,
    }  # ros_name: the ROS parameter name where it is not the field name
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class FeatureNodeConfig:
    """What every feature node (teacher or student) takes: inputs, scheduling, outputs, diagnostics."""

    device: str = param("cuda", "torch device string, e.g. cuda, cuda:1, cpu", True)
    dtype: str = param("float16", "model dtype", True, choices=("float16", "bfloat16", "float32"))
    camera_topics: list[str] = param(
        ["camera/image_raw"],
        "camera topics in prompt order; a topic ending in /compressed is read as sensor_msgs/CompressedImage",
        True,
    )
    instruction_topic: str = param("instruction", "std_msgs/String topic (reliable, transient-local)", True)
    default_instruction: str = param("Perform the default behavior.", "instruction used until one arrives")
    sync_slop_s: float = param(0.05, "max stamp difference between cameras of one frame set", range=(0.0, 10.0))
    max_frame_age_s: float = param(
        1.0, "frame sets older than this (node clock minus stamp) are never used; 0 disables", range=(0.0, 3600.0)
    )
    sync_queue_size: int = param(8, "frames kept per camera while waiting for a match", True, range=(1, 1000))
    feature_dtype: str = param(
        "float32", "feature message encoding: float32 (32FC1) or float16 (16FC1)", choices=("float32", "float16")
    )
    diagnostics_period_s: float = param(1.0, "period of /diagnostics messages", True, range=(0.1, 60.0))
    warn_throttle_s: float = param(5.0, "minimum seconds between repeated warnings of one kind", range=(0.0, 3600.0))
    autostart: bool = param(True, "configure and activate on start (plain launches without a lifecycle manager)", True)
    warmup_camera_size: list[int] = param(
        [640, 480],
        "width and height of the synthetic frames the configure warm-up sends through every serving path "
        "(decode, preprocessing, the model, the head, the message): frames of this size are served at full "
        "speed from the first one",
        True,
    )
    max_instruction_chars: int = param(
        MAX_INSTRUCTION_CHARS,
        "longer instructions are rejected and counted (rejected_instruction_too_long)",
        range=(1, 1_000_000),
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices and value not in choices:
                raise ValueError(f"parameter '{f.name}': {value!r} is not one of {list(choices)}")
        if not self.camera_topics or not all(self.camera_topics):
            raise ValueError(f"parameter 'camera_topics': expected at least one topic name, got {self.camera_topics}")
        size = self.warmup_camera_size
        if len(size) != 2 or not all(isinstance(v, int) and 1 <= v <= 16384 for v in size):
            raise ValueError(f"parameter 'warmup_camera_size': expected [width, height] in 1..16384, got {size}")
        text = self.default_instruction
        if not isinstance(text, str) or not text.strip() or len(text) > self.max_instruction_chars:
            length = len(text) if isinstance(text, str) else type(text).__name__
            raise ValueError(
                f"parameter 'default_instruction': expected non-empty text of at most "
                f"max_instruction_chars={self.max_instruction_chars} characters, got {length}"
            )


@dataclass
class ActionHeadParams:
    """The action head's parameters, the same on groot_node and sage_node (``action_head.*``)."""

    action_head_enabled: bool = param(
        False, "also run the flow-matching action head and publish action chunks", True, ros_name="action_head.enabled"
    )
    action_head_embodiment_config: str = param(
        "",
        "embodiment YAML: joint names per state/action key, normalisation, limits (config/embodiments/)",
        True,
        ros_name="action_head.embodiment_config",
    )
    action_head_dry_run: bool = param(
        True,
        "publish chunks on ~/action_chunk/dry_run instead of ~/action_chunk, so nothing moves by accident",
        True,
        ros_name="action_head.dry_run",
    )
    action_head_max_state_age_s: float = param(
        0.5,
        "no chunk unless the last joint state is at most this old (node clock minus its stamp)",
        range=(0.0, 3600.0),
        ros_name="action_head.max_state_age_s",
    )
    action_head_control_rate_hz: float = param(
        30.0,
        "rate of the chunk's points: point k is at (k + 1) / rate",
        range=(0.1, 10000.0),
        ros_name="action_head.control_rate_hz",
    )
    action_head_seed: int = param(
        -1,
        "noise seed for reproducible chunks; -1 draws fresh noise each time",
        range=(-1, 2**31 - 1),
        ros_name="action_head.seed",
    )
    action_head_execution_horizon: int = param(
        0,
        "steps of a chunk executed before the next one takes over: a new chunk once the last has run this many "
        "minus the delay; 0: a chunk for every frame set, stamped with the camera frame (no schedule)",
        True,
        range=(0, 100000),
        ros_name="action_head.execution_horizon",
    )
    action_head_rtc: str = param(
        "off",
        "real-time chunking: off, prefix (the previous chunk's committed steps frozen, the overlap ramped) or "
        "guided (each step corrected towards the previous chunk); on, chunks follow the execution schedule",
        True,
        choices=("off", "prefix", "guided"),
        ros_name="action_head.rtc",
    )
    action_head_delay_steps: int = param(
        -1,
        "steps a chunk is late by (committed to the previous chunk); -1: ceil(p95 of the measured camera-stamp-"
        "to-publish latency / control period) over the last 50 chunks",
        True,
        range=(-1, 100000),
        ros_name="action_head.delay_steps",
    )
    action_head_rtc_guided_steps: int = param(
        1,
        "rtc guided: the head's first denoising steps whose correction goes through the head's Jacobian (a "
        "backward pass each, about a quarter of the head's time again); the others use the identity; -1: all",
        True,
        range=(-1, 1000),
        ros_name="action_head.rtc_guided_steps",
    )
    joint_states_topic: str = param("joint_states", "sensor_msgs/JointState topic (action head only)", True)


@dataclass
class TeacherNodeConfig(ActionHeadParams, FeatureNodeConfig):
    """groot_node: a GR00T checkpoint (any supported family) and, optionally, its action head."""

    checkpoint: str = param("", "GR00T checkpoint folder, or a repo id in the local Hugging Face cache", True)
    tokenizer: str = param("", "tokenizer/processor folder; empty = built-in Qwen tokenizer", True)
    instruction_format: str = param(
        "", "how the instruction is rendered in the prompt (the family's formats; empty: its default)", True
    )
    compile: str = param(
        "auto", "torch.compile the transformer layers: auto (CUDA only), on, off", True, choices=("auto", "on", "off")
    )
    cuda_graphs: bool = param(True, "replay CUDA graphs of the model (CUDA only; false: plain calls)", True)
    compile_cache_dir: str = param(
        "", "compiled-kernel cache; empty = $TORCHINDUCTOR_CACHE_DIR or ~/.cache/groot_sage_ros/torchinductor", True
    )
    precision: str = param(
        "fp16",
        "the repeated layers' Linear weights: fp16, int8_weight (Ampere, Orin) or fp8 (Ada, "
        "Hopper, Blackwell, Thor); check with groot-sage quantize-check",
        True,
        choices=PRECISION_NAMES,
    )
    fp8_min_rows: int = param(
        64,
        "fp8 only: calls with fewer rows (tokens: the action head's) read the fp8 weights through the weight-only "
        "kernel instead of quantising activations",
        True,
        range=(0, 2**31 - 1),
    )
    precision_keep_fp16: list[str] = param(
        [""],
        "layers (language.3), projections of one (language.3.mlp.down_proj) or projection kinds (down_proj) the "
        "precision leaves at fp16 (groot-sage quantize-check --sensitivity ranks them); [''] = none",
        True,
    )


@dataclass
class StudentNodeConfig(ActionHeadParams, FeatureNodeConfig):
    """sage_node: a distilled student behind the same topics, optionally with the teacher's action head."""

    student: str = param(
        "", "student checkpoint (student.safetensors from groot-sage distill, or its run folder)", True
    )
    teacher_features_topic: str = param(
        "", "teacher ~/features topic to pair with by stamp for live cosine fidelity; empty = off", True
    )
    action_head_checkpoint: str = param(
        "",
        "teacher checkpoint whose action head runs on the student's features (its backbone is not loaded)",
        True,
        ros_name="action_head.checkpoint",
    )


def ros_name(f) -> str:
    """The ROS parameter name of a config field."""
    return f.metadata.get("ros_name") or f.name
