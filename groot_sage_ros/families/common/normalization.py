"""State and action normalisation from a checkpoint's statistics file (GR00T's ``metadata.json`` format).

metadata.json is keyed by embodiment tag; each entry holds ``statistics.{state,action}.<key>`` with
min/max/mean/std/q01/q99 per dimension and ``modalities.{state,action}.<key>.shape``. State keys, in the
order the metadata lists them, are concatenated and zero-padded to the model's state width; its action
output is cut back into the action keys the same way.

Modes (per key, chosen by the embodiment config; Isaac-GR00T's data configs choose them likewise):
``min_max`` and ``q99`` map [low, high] to [-1, 1] (clipped), ``mean_std`` standardises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

MODES = ("min_max", "q99", "mean_std")


@dataclass
class KeyStats:
    name: str
    width: int
    mode: str
    stats: dict[str, np.ndarray]  # min, max, mean, std, q01, q99: (width,) each

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if self.mode == "mean_std":
            return self.stats["mean"], self.stats["std"]
        low, high = ("min", "max") if self.mode == "min_max" else ("q01", "q99")
        return self.stats[low], self.stats[high]

    def normalize(self, x: np.ndarray) -> np.ndarray:
        a, b = self.bounds()
        if self.mode == "mean_std":
            return (x - a) / np.where(b > 0, b, 1.0)
        span = b - a
        out = np.where(span > 0, 2.0 * (x - a) / np.where(span > 0, span, 1.0) - 1.0, 0.0)
        return np.clip(out, -1.0, 1.0)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        a, b = self.bounds()
        if self.mode == "mean_std":
            return y * b + a
        return (np.clip(y, -1.0, 1.0) + 1.0) / 2.0 * (b - a) + a


def pick_embodiment(statistics: dict, tag: str | None, path: Path) -> str:
    """``tag``, checked against a statistics file's embodiments; None: the file's only one."""
    if tag is None:
        if len(statistics) != 1:
            raise ValueError(f"{path}: holds embodiments {sorted(statistics)}; name one (--embodiment)")
        tag = next(iter(statistics))
    if tag not in statistics:
        raise ValueError(f"{path}: no embodiment {tag!r}; the checkpoint has {sorted(statistics)}")
    return tag


def check_modes(modes: dict[str, str] | None) -> dict[str, str]:
    for key, mode in (modes or {}).items():
        if mode not in MODES:
            raise ValueError(f"normalisation mode {mode!r} for {key!r}: expected one of {list(MODES)}")
    return modes or {}


def example_stats(width: int, low: float, high: float) -> dict[str, list[float]]:
    """Every statistic kind for ``width`` dimensions spanning [low, high]: what the tiny checkpoints write."""
    return {
        "min": [low] * width,
        "max": [high] * width,
        "q01": [low * 0.9] * width,
        "q99": [high * 0.9] * width,
        "mean": [(low + high) / 2] * width,
        "std": [(high - low) / 4] * width,
    }


@dataclass
class EmbodimentNormalizer:
    tag: str
    embodiment_id: int
    state_keys: list[KeyStats] = field(default_factory=list)
    action_keys: list[KeyStats] = field(default_factory=list)
    # action key -> (state key, "non_eef" | "eef"): the model predicts it relative to the current state
    # (N1.7's relative actions); ``split_actions`` adds the state back (or composes the xyz+rot6d pose)
    relative: dict[str, tuple[str, str]] = field(default_factory=dict)
    horizon: int | None = None  # the embodiment's valid chunk length, when shorter than the model's

    @classmethod
    def from_metadata(
        cls,
        metadata_path: str | Path,
        tag: str | None,
        id_of: Callable[[str], int],
        modes: dict[str, str] | None = None,
    ):
        """Statistics for embodiment ``tag`` (None: the file's only embodiment); ``id_of(tag)`` is its category
        id in the head's per-embodiment layers (the family's table); ``modes`` maps a key to its mode
        (default ``min_max``)."""
        path = Path(metadata_path)
        if not path.is_file():
            raise ValueError(f"{path}: no such statistics file (the checkpoint has no normalisation statistics)")
        metadata = json.loads(path.read_text())
        tag = pick_embodiment(metadata, tag, path)
        embodiment_id = id_of(tag)
        entry, modes = metadata[tag], check_modes(modes)

        def keys(kind: str) -> list[KeyStats]:
            out = []
            for name, shape_info in entry["modalities"][kind].items():
                stats = {k: np.asarray(v, dtype=np.float64) for k, v in entry["statistics"][kind][name].items()}
                out.append(KeyStats(name, int(np.prod(shape_info["shape"])), modes.get(name, "min_max"), stats))
            return out

        return cls(tag, embodiment_id, keys("state"), keys("action"))

    def state_vector(self, state: dict[str, np.ndarray], width: int) -> np.ndarray:
        """Per-key raw state -> normalised, concatenated, zero-padded (width,) float32."""
        parts = []
        for key in self.state_keys:
            if key.name not in state:
                raise ValueError(f"state key {key.name!r} missing; expected keys {[k.name for k in self.state_keys]}")
            value = np.asarray(state[key.name], dtype=np.float64).reshape(-1)
            if value.shape[0] != key.width:
                raise ValueError(f"state key {key.name!r}: {value.shape[0]} values, expected {key.width}")
            parts.append(key.normalize(value))
        flat = np.concatenate(parts) if parts else np.zeros(0)
        if flat.shape[0] > width:
            raise ValueError(f"state of {flat.shape[0]} values exceeds the model's state width {width}")
        return np.pad(flat, (0, width - flat.shape[0])).astype(np.float32)

    def zero_state(self) -> dict[str, np.ndarray]:
        return {key.name: np.zeros(key.width) for key in self.state_keys}

    def split_actions(self, actions: np.ndarray, state: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """(H, action_dim) normalised model output -> per-key (H, width) arrays in robot units; relative keys
        are made absolute with ``state`` (robot units), which they need."""
        if self.horizon is not None:
            actions = actions[: self.horizon]
        out, start = {}, 0
        for key in self.action_keys:
            out[key.name] = key.unnormalize(actions[:, start : start + key.width].astype(np.float64))
            start += key.width
        for name, (state_key, kind) in self.relative.items():
            if state is None or state_key not in state:
                raise ValueError(f"action {name!r} is relative to state {state_key!r}: the current state is needed")
            reference = np.asarray(state[state_key], dtype=np.float64).reshape(-1)
            out[name] = out[name] + reference if kind == "non_eef" else compose_poses(reference, out[name])
        return out

    def rebase(self, actions: np.ndarray, old: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> np.ndarray:
        """(H, A) normalised actions relative to state ``old`` -> the same motion relative to state ``new``
        (robot units in both): real-time chunking's prefix for a relative-action embodiment. Absolute keys
        and the padding are unchanged."""
        out, start, spans = actions.copy(), 0, {}
        for key in self.action_keys:
            spans[key.name] = (key, start)
            start += key.width
        for name, (state_key, kind) in self.relative.items():
            key, begin = spans[name]
            part = key.unnormalize(actions[:, begin : begin + key.width].astype(np.float64))
            before = np.asarray(old[state_key], dtype=np.float64).reshape(-1)
            after = np.asarray(new[state_key], dtype=np.float64).reshape(-1)
            if kind == "non_eef":
                part = part + before - after
            else:
                part = relative_poses(after, compose_poses(before, part))
            out[:, begin : begin + key.width] = key.normalize(part)
        return out


def rot6d_to_matrix(rot6d: np.ndarray) -> np.ndarray:
    """Two rows of a rotation matrix (6,) -> the matrix (3, 3), Gram-Schmidt (NVIDIA's rot6d convention)."""
    rows = rot6d.reshape(2, 3)
    first = rows[0] / np.linalg.norm(rows[0])
    second = rows[1] - np.dot(first, rows[1]) * first
    second = second / np.linalg.norm(second)
    return np.vstack([first, second, np.cross(first, second)])


def pose_matrix(xyz_rot6d: np.ndarray) -> np.ndarray:
    transform = np.eye(4)
    transform[:3, :3] = rot6d_to_matrix(xyz_rot6d[3:9])
    transform[:3, 3] = xyz_rot6d[:3]
    return transform


def compose_poses(reference: np.ndarray, relative: np.ndarray) -> np.ndarray:
    """Absolute end-effector poses (H, 9) xyz+rot6d from a reference pose (9,) and poses relative to it."""
    base = pose_matrix(reference)
    out = np.empty_like(relative)
    for step, pose in enumerate(relative):
        absolute = base @ pose_matrix(pose)
        out[step] = np.concatenate([absolute[:3, 3], absolute[:2, :3].reshape(-1)])
    return out


def relative_poses(reference: np.ndarray, absolute: np.ndarray) -> np.ndarray:
    """The inverse of ``compose_poses``: poses (H, 9) xyz+rot6d relative to a reference pose (9,)."""
    inverse = np.linalg.inv(pose_matrix(reference))
    out = np.empty_like(absolute)
    for step, pose in enumerate(absolute):
        relative = inverse @ pose_matrix(pose)
        out[step] = np.concatenate([relative[:3, 3], relative[:2, :3].reshape(-1)])
    return out
