"""The flow-matching heads' Euler integration, shared by the families, with real-time chunking (RTC).

Both heads integrate a velocity field from t = 0 (noise) to t = 1 (actions) in a few Euler steps. RTC
makes a new chunk continue the one the robot is executing (Black, Galliker, Levine 2025, arXiv 2506.07339),
without training, in one of two ways (``api.ChunkPrefix``):

- ``prefix``: hard inpainting, as GR00T N1.7 ships it (LeRobot ``groot_n1_7.py``): the previous chunk's
  actions start the overlap, the first ``frozen`` steps get zero velocity (so they equal the previous chunk
  exactly) and the rest of the overlap an exponential ramp ``1 - exp(-r t)``, normalised to end at 1;
  every input is a tensor, so CUDA graphs replay it as they do the plain head;
- ``guided``: the plain flow, with each step's velocity corrected towards the prefix (LeRobot
  ``policies/rtc``): weights 1 on the frozen steps, falling linearly to 0 over the rest of the overlap, and
  the correction ``J^T W (prefix - x1)`` of the predicted end point ``x1 = x + (1 - t) v`` by one backward
  pass through the head, scaled by ``min(max_guidance, (1 - t) / t * (t^2 + (1 - t)^2) / (1 - t)^2)``.
  A backward pass costs about a quarter of the head's time again, so only the first ``guided_steps``
  denoising steps take it; the others use the identity for the Jacobian ``J = I + (1 - t) dv/dx`` (the
  weighted error itself: no backward pass). The Jacobian matters most early, where ``x`` is mostly noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ...api import ChunkPrefix

Velocity = Callable[[torch.Tensor, int], torch.Tensor]  # (actions (B, H, A), step) -> velocity (B, H, A)


def prefix_strength(prefix: ChunkPrefix, horizon: int) -> torch.Tensor:
    """(H,) how much of each step's velocity ``prefix`` mode applies: 0 on the frozen steps, the ramp over
    the rest of the overlap, 1 after it."""
    strength = torch.ones(horizon)
    strength[: prefix.frozen] = 0.0
    ramped = prefix.overlap - prefix.frozen
    if ramped > 0:
        t = torch.linspace(0.0, 1.0, ramped + 2)
        ramp = 1 - torch.exp(-prefix.ramp_rate * t)
        strength[prefix.frozen : prefix.overlap] = (ramp / ramp[-1].clamp_min(1e-8))[1:-1]
    return strength


def guidance_weights(prefix: ChunkPrefix, horizon: int) -> torch.Tensor:
    """(H,) ``guided`` mode's soft mask: 1 on the frozen steps, linear to 0 over the rest of the overlap, 0 after."""
    weights = torch.zeros(horizon)
    weights[: prefix.frozen] = 1.0
    ramped = prefix.overlap - prefix.frozen
    if ramped > 0:
        weights[prefix.frozen : prefix.overlap] = torch.linspace(1, 0, ramped + 2)[1:-1]
    return weights


def start_and_strength(prefix: ChunkPrefix | None, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The integration's start (B, H, A) and per-step velocity scale (1, H, 1) for ``prefix`` mode (the noise
    with the prefix in its overlap); the noise and None otherwise."""
    if prefix is None or prefix.mode != "prefix":
        return noise, None
    horizon = noise.shape[1]
    overlap = torch.zeros(horizon, dtype=torch.bool)
    overlap[: prefix.overlap] = True
    actions = prefix.actions.to(noise.device, noise.dtype).expand_as(noise)
    start = torch.where(overlap.to(noise.device)[None, :, None], actions, noise)
    return start, prefix_strength(prefix, horizon).to(noise.device, noise.dtype)[None, :, None]


@dataclass(frozen=True)
class Guidance:
    """``guided`` mode as tensors (so a CUDA graph replays it with new ones): what the overlap is pulled
    towards, how hard at each step of the chunk, the largest weight, and on how many denoising steps the
    correction goes through the head's Jacobian (a backward pass each) rather than the identity."""

    target: torch.Tensor  # (1, H, A) the previous chunk's actions at the new chunk's steps
    weights: torch.Tensor  # (1, H, 1) guidance_weights
    max_weight: float
    steps: int  # the first ``steps`` denoising steps use the head's Jacobian, the rest the identity; -1: all

    @classmethod
    def of(cls, prefix: ChunkPrefix, like: torch.Tensor) -> "Guidance":
        """``prefix``'s guidance on ``like``'s (1, H, A) device and dtype."""
        target = prefix.actions.to(like.device, like.dtype)[None]  # (1, H, A)
        weights = guidance_weights(prefix, like.shape[1]).to(like.device, like.dtype)[None, :, None]  # (1, H, 1)
        return cls(target, weights, prefix.max_guidance, prefix.guided_steps)

    def step(self, velocity: Velocity, actions: torch.Tensor, k: int, steps: int) -> torch.Tensor:
        """Step ``k``'s velocity, corrected towards the target: through the head's Jacobian (a backward pass)
        on the first ``self.steps`` steps, through the identity in its place on the others."""
        t = k / steps
        weight = self.max_weight if t == 0 else min(self.max_weight, (1 - t) / t * (t**2 + (1 - t) ** 2) / (1 - t) ** 2)
        if 0 <= self.steps <= k:  # J ~ I: the correction is the weighted error itself, no backward pass
            v = velocity(actions, k)
            return v + weight * (self.target - (actions + (1 - t) * v)) * self.weights
        with torch.enable_grad():
            x = actions.detach().requires_grad_(True)
            v = velocity(x, k)
            end = x + (1 - t) * v  # the end point this step predicts
            error = ((self.target - end) * self.weights).detach()
            correction = torch.autograd.grad(end, x, error)[0]  # J^T W (target - end)
        return v.detach() + weight * correction


def step_buckets(steps: int, num_buckets: int, batch: int, device) -> torch.Tensor:
    """(steps, B) the Euler steps' timestep buckets, int(k / steps * num_buckets): 0, 250, 500, 750 for 4 of 1000."""
    starts = [int(k / steps * num_buckets) for k in range(steps)]
    return torch.stack([torch.full((batch,), start, device=device) for start in starts])


def euler(
    velocity: Velocity,
    start: torch.Tensor,
    steps: int,
    strength: torch.Tensor | None = None,
    guidance: Guidance | None = None,
) -> torch.Tensor:
    """Integrate from ``start`` (B, H, A) in ``steps`` Euler steps; ``strength`` (1, H, 1) scales each step's
    velocity (``prefix`` mode), ``guidance`` corrects it (``guided`` mode)."""
    actions = start
    for k in range(steps):
        v = velocity(actions, k) if guidance is None else guidance.step(velocity, actions, k, steps)
        if strength is not None:
            v = v * strength.to(v.dtype)  # the noise's float32 must not promote an fp16 head's actions
        actions = actions + v / steps
    return actions
