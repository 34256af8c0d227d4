"""``HeadPolicy``: a loaded action head with one embodiment's statistics: robot-unit state in, action chunk
in robot units out (the ``ActionPolicy`` of ``api.py``, used by the CLI and groot_node)."""

from __future__ import annotations

import numpy as np
import torch

from ..api import ChunkPrefix, FeatureResult
from ..families.common.normalization import EmbodimentNormalizer


class HeadPolicy:
    def __init__(self, engine, normalizer: EmbodimentNormalizer):
        self.engine, self.normalizer = engine, normalizer
        self.embodiment = normalizer.tag
        self.state_keys = [key.name for key in normalizer.state_keys]
        self.action_keys = [key.name for key in normalizer.action_keys]
        self.horizon = normalizer.horizon or engine.model.action_horizon  # the embodiment may use fewer steps

    @property
    def real_actions(self) -> tuple[int, int]:
        """(steps, width) of a normalised chunk that the embodiment uses: its horizon and its action keys'
        widths; the rest (padding to the model's action width and horizon) moves nothing."""
        return self.horizon, sum(key.width for key in self.normalizer.action_keys)

    def zero_state(self) -> dict[str, np.ndarray]:
        return self.normalizer.zero_state()

    def normalised_chunk(
        self,
        result: FeatureResult,
        state: dict[str, np.ndarray],
        seed: int | None = None,
        reference: bool = False,
        prefix: ChunkPrefix | None = None,
    ) -> torch.Tensor:
        """(model horizon, action_dim) normalised, on the host, for the first sample of ``result``; with
        ``prefix``, continuing that chunk (real-time chunking)."""
        vector = self.normalizer.state_vector(state, self.engine.state_width)  # raises naming a bad key
        chunk = self.engine.predict_actions(
            result, torch.from_numpy(vector)[None], self.normalizer.embodiment_id, seed, reference, prefix
        )
        return chunk[0].float().cpu()

    def chunk(
        self, result: FeatureResult, state: dict[str, np.ndarray], seed: int | None = None, reference: bool = False
    ) -> dict[str, np.ndarray]:
        """Action key -> (horizon, width) in robot units, for the first sample of ``result``."""
        return self.normalizer.split_actions(self.normalised_chunk(result, state, seed, reference).numpy(), state)


def action_error_ratio(
    chunk: torch.Tensor, reference: torch.Tensor, baseline: torch.Tensor, real: tuple[int, int]
) -> float:
    """How far ``chunk`` is from ``reference`` (normalised chunks, same state and noise) as a fraction of how
    far ``baseline`` is: the chunk from features that ignore the frame. 0: the reference's actions; 1: no
    better than ignoring the frame. Over the ``real`` (steps, width) the embodiment uses."""
    steps, width = real
    error = (chunk[:steps, :width] - reference[:steps, :width]).norm()
    scale = (baseline[:steps, :width] - reference[:steps, :width]).norm()
    return float(error / scale.clamp(min=1e-12))
