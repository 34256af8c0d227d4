"""Robot joints <-> GR00T state/action keys, from an embodiment YAML (``config/embodiments/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml


@dataclass
class EmbodimentConfig:
    embodiment_tag: str
    state: dict[str, list[str]]  # metadata state key -> joint names
    action: dict[str, list[str]]  # metadata action key -> joint names
    normalization: dict[str, str] = field(default_factory=dict)
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "EmbodimentConfig":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"embodiment config {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}  # safe_load: a Python tag is an error, never code
        except yaml.YAMLError as err:
            raise ValueError(f"embodiment config {path}: not plain YAML ({' '.join(str(err).split())})") from None
        if not isinstance(data, dict):
            raise ValueError(f"embodiment config {path}: expected a mapping at the top, got {type(data).__name__}")
        missing = [k for k in ("embodiment_tag", "state", "action") if k not in data]
        if missing:
            raise ValueError(f"embodiment config {path}: missing {missing}")
        for key in ("state", "action"):
            groups = data[key]
            if not isinstance(groups, dict) or not all(
                isinstance(joints, list) and all(isinstance(j, str) for j in joints) for joints in groups.values()
            ):
                raise ValueError(f"embodiment config {path}: '{key}' must map each key to a list of joint names")
        limits, raw_limits = {}, data.get("limits") or {}
        if not isinstance(raw_limits, dict):
            raise ValueError(f"embodiment config {path}: 'limits' must map joint names to [low, high]")
        for name, bounds in raw_limits.items():
            try:
                low, high = (float(b) for b in bounds)
            except (TypeError, ValueError):
                raise ValueError(
                    f"embodiment config {path}: limits.{name} = {bounds!r}, expected [low, high]"
                ) from None
            if not low <= high:
                raise ValueError(f"embodiment config {path}: limits.{name} = {bounds!r}, expected low <= high")
            limits[name] = (low, high)
        normalization = data.get("normalization") or {}
        if not isinstance(normalization, dict):
            raise ValueError(f"embodiment config {path}: 'normalization' must map keys to mode names")
        return cls(str(data["embodiment_tag"]), data["state"], data["action"], normalization, limits)

    @property
    def action_joints(self) -> list[str]:
        return [joint for joints in self.action.values() for joint in joints]

    def state_from_joints(self, names: list[str], positions: list[float]) -> dict[str, np.ndarray]:
        """JointState names/positions -> {state key: values}; ValueError naming any missing joint."""
        index = dict(zip(names, positions))
        missing = [j for joints in self.state.values() for j in joints if j not in index]
        if missing:
            raise ValueError(f"joint state lacks {missing}")
        return {key: np.array([index[j] for j in joints]) for key, joints in self.state.items()}

    def joint_positions(self, actions: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
        """{action key: (H, width)} -> (H, joints) in ``action_joints`` order, clipped to limits; and how
        many values were clipped."""
        columns = []
        for key, joints in self.action.items():
            if actions[key].shape[1] != len(joints):
                raise ValueError(f"action key {key!r} has {actions[key].shape[1]} values, config names {len(joints)}")
            columns.append(actions[key])
        positions = np.concatenate(columns, axis=1)  # (H, J)
        low = np.array([self.limits.get(j, (-np.inf, np.inf))[0] for j in self.action_joints])
        high = np.array([self.limits.get(j, (-np.inf, np.inf))[1] for j in self.action_joints])
        clipped = np.clip(positions, low, high)
        return clipped, int(np.count_nonzero(clipped != positions))
