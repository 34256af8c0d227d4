"""How an engine runs a model (not what the model is): device, dtype and the fast path's knobs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}


def parse_dtype(name: str, what: str = "dtype") -> torch.dtype:
    """Map a dtype name to torch; the error names the input and the accepted names."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[str(name)]
    except KeyError:
        raise ValueError(f"{what} {name!r} is not supported; expected one of {sorted(DTYPES)}") from None


COMPILE_MODES = ("auto", "on", "off")


@dataclass
class RuntimeConfig:
    """How the engine runs the model (not what the model is): the one home for the speed knobs.

    ``compile``: "auto" compiles the transformer layers with ``torch.compile`` on CUDA only, "on" on any
    device (the CPU too, as the tests do), "off" never. ``cuda_graphs`` replays one CUDA graph per input
    shape on CUDA for batches of up to ``graph_max_batch`` frame sets; there, prompts are right-padded to a
    multiple of ``length_bucket`` tokens so that a few graphs cover every instruction (where the family
    says that padding is exact). ``compile_cache_dir`` keeps compiled kernels across restarts; empty means
    ``$TORCHINDUCTOR_CACHE_DIR`` or ``~/.cache/groot_sage_ros/torchinductor``.
    """

    compile: str = "auto"
    compile_mode: str = "default"  # torch.compile mode, e.g. "max-autotune-no-cudagraphs" (graphs are ours)
    dynamic_lengths: bool = True  # one compiled program for every prompt length (False: one per shape)
    cuda_graphs: bool = True
    graph_max_batch: int = 128  # above this, plain (compiled) calls (the README's extract table ran with graphs)
    length_bucket: int = 16
    compile_cache_dir: str = ""
    # The repeated layers' Linear modules: fp16, int8_weight or fp8, a module swap at load (fastpath/precision.py)
    precision: str = "fp16"
    fp8_min_rows: int = 64  # fp8: smaller calls (the action head's) take the weight-only kernel
    # Layers (``language.3``), projections of one (``language.3.mlp.down_proj``) or projection kinds
    # (``down_proj``) the precision leaves at fp16 (mixed precision: ``quantize-check --sensitivity``)
    precision_keep_fp16: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from ..fastpath.precision import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {list(PRECISIONS)}")
        if isinstance(self.fp8_min_rows, bool) or not isinstance(self.fp8_min_rows, int) or self.fp8_min_rows < 0:
            raise ValueError(f"fp8_min_rows {self.fp8_min_rows!r}: expected a whole number of rows, 0 or more")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile {self.compile!r}: expected one of {list(COMPILE_MODES)}")
        self.precision_keep_fp16 = tuple(str(name) for name in self.precision_keep_fp16 or () if str(name))
        if self.length_bucket < 1:
            raise ValueError(f"length_bucket {self.length_bucket}: expected a positive number of tokens")

    @classmethod
    def from_attributes(cls, source) -> "RuntimeConfig":
        """From any object with same-named attributes: parsed options (``--compile``, ``--no-cuda-graphs``,
        ``--compile-cache-dir``) or a node's config. Fields the source does not have keep their defaults."""
        names = (
            "compile",
            "compile_mode",
            "dynamic_lengths",
            "cuda_graphs",
            "graph_max_batch",
            "length_bucket",
            "compile_cache_dir",
            "precision",
            "fp8_min_rows",
            "precision_keep_fp16",
        )
        return cls(**{name: getattr(source, name) for name in names if hasattr(source, name)})

    def compiles_on(self, device: torch.device) -> bool:
        return self.compile == "on" or (self.compile == "auto" and device.type == "cuda")

    def graphs_on(self, device: torch.device) -> bool:
        return self.cuda_graphs and device.type == "cuda"


def resolve_device(device: str) -> torch.device:
    """A torch device from a string; an unavailable CUDA device is an error naming it."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device string ({err})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return resolved
