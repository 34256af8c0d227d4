"""Inductor's one-pass ("persistent") reductions, widened from rows of 1,024 elements to rows of 2,048.

A persistent reduction keeps a whole row in registers and reads it once. Inductor uses one only for rows
of up to 1,024 elements; wider rows get a looped kernel, which reads the row twice and accumulates a
layer norm's variance with Welford's method. SigLIP's rows are 1,152 wide, so its layer norms, the
2,048-wide Qwen3 RMS norms and the action head's 1,536-wide norms all go persistent, reading each row once
instead of twice (docs/speed.md has the timings). The kernels compute the same sums in a different order,
within fp16 tolerance.

This is a code-generation heuristic for the GPU (Triton). On the CPU, inductor writes C++ and never asks.
"""

from __future__ import annotations

from torch._inductor import config as inductor_config
from torch._inductor.choices import InductorChoices
from torch._inductor.runtime.hints import ReductionHint

WIDEST_PERSISTENT_ROW = 2048


def one_pass(hint: ReductionHint, cooperative: bool, row_elements) -> bool:
    """Whether a reduction of ``row_elements`` contiguous values per row should take one pass: an inner
    (row-wise) reduction of a known width up to ``WIDEST_PERSISTENT_ROW``. False means inductor decides."""
    if hint != ReductionHint.INNER or cooperative or not inductor_config.triton.persistent_reductions:
        return False
    try:
        width = int(row_elements)  # a symbolic (dynamic) width raises
    except TypeError:
        return False
    return width <= WIDEST_PERSISTENT_ROW


class WidePersistentReductions(InductorChoices):
    """Inductor's choices, with ``one_pass`` rows reduced in one pass (``inductor_choices_class``)."""

    @staticmethod
    def should_use_persistent_reduction(features, cooperative_reduction: bool) -> bool:
        if one_pass(features.get_reduction_hint(), cooperative_reduction, features.reduction_numel):
            return True
        return InductorChoices.should_use_persistent_reduction(features, cooperative_reduction)

    def uuid(self) -> str:  # part of the compiled-graph cache key
        return f"groot_sage_ros.WidePersistentReductions:{WIDEST_PERSISTENT_ROW}"
