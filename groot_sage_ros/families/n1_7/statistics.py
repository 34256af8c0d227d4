"""GR00T N1.7's normalisation statistics and embodiments, from the files beside its config.json.

    statistics.json        {tag: {"state": {key: stats}, "action": {key: stats}, "relative_action": {key: stats}}}
    processor_config.json  processor_kwargs: modality_configs[tag].{state,action}.modality_keys (the order of
                           the keys in the state and action vectors), action.action_configs (per key: rep
                           relative/absolute, type eef/non_eef, format, state_key), action.delta_indices (the
                           embodiment's chunk length), use_percentiles, use_relative_action
    embodiment_id.json     {tag: category id}; LeRobot's built-in table when the file is absent

As LeRobot's N1.7 pipeline reads them (processor_groot.py, utils.flatten_n1_7_modality_stats): min/max
normalisation, q01/q99 for it with use_percentiles, and a relative action key normalised with its
``relative_action`` min/max (one row per chunk step or one for all) and added back to the current state
(``non_eef``) or composed with the current xyz+rot6d pose (``eef``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..common.normalization import EmbodimentNormalizer, KeyStats, check_modes, pick_embodiment

STATISTICS_FILE = "statistics.json"
PROCESSOR_FILE = "processor_config.json"
EMBODIMENT_FILE = "embodiment_id.json"

# LeRobot processor_groot.py N1_7_EMBODIMENT_MAPPING: used when the checkpoint has no embodiment_id.json.
EMBODIMENT_IDS = {
    "oxe_droid_relative_eef_relative_joint": 24,
    "xdof_relative_eef_relative_joint": 27,
    "real_g1_relative_eef_relative_joints": 25,
    "real_r1_pro_sharpa_relative_eef": 26,
    "unitree_g1_full_body_with_waist_height_nav_cmd": 25,
    "simpler_env_google": 0,
    "simpler_env_widowx": 1,
    "libero_sim": 2,
    "new_embodiment": 10,
}


def read_json(path: Path, required: bool = True) -> Any:
    if not path.is_file():
        if required:
            raise ValueError(f"{path}: no such file (the checkpoint's normalisation statistics)")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from None


def processor_kwargs(root: Path) -> dict[str, Any]:
    """``processor_config.json``'s processor_kwargs ({} without the file)."""
    raw = read_json(root / PROCESSOR_FILE, required=False) or {}
    kwargs = raw.get("processor_kwargs", {}) if isinstance(raw, dict) else None
    if not isinstance(kwargs, dict):
        raise ValueError(f"{root / PROCESSOR_FILE}: processor_kwargs must be an object")
    return kwargs


def rep(value: Any) -> str:
    """An enum as Isaac-GR00T serialises it ("RELATIVE", "ActionRepresentation.RELATIVE") -> "relative"."""
    text = str(value).rsplit(".", 1)[-1].lower()
    return {"xyz_rot6d": "xyz+rot6d"}.get(text, text)


def embodiment_ids(root: Path) -> dict[str, int]:
    mapping = read_json(root / EMBODIMENT_FILE, required=False)
    if mapping is None:
        return dict(EMBODIMENT_IDS)
    if not isinstance(mapping, dict) or not all(isinstance(v, int) and 0 <= v for v in mapping.values()):
        raise ValueError(f"{root / EMBODIMENT_FILE}: expected {{tag: category id}}")
    return mapping


def load_normalizer(root: Path, tag: str | None, modes: dict[str, str] | None = None) -> EmbodimentNormalizer:
    """The embodiment's normaliser; ``modes`` overrides a key's mode (min_max, q99, mean_std)."""
    path = root / STATISTICS_FILE
    statistics = read_json(path)
    if not isinstance(statistics, dict) or not statistics:
        raise ValueError(f"{path}: expected {{embodiment tag: statistics}}")
    tag = pick_embodiment(statistics, tag, path)
    ids = embodiment_ids(root)
    if tag not in ids:
        raise ValueError(f"embodiment {tag!r} has no category id in {root / EMBODIMENT_FILE}; known: {sorted(ids)}")
    kwargs = processor_kwargs(root)
    config = (kwargs.get("modality_configs") or {}).get(tag) or {}
    modes = check_modes(modes)
    default_mode = "q99" if kwargs.get("use_percentiles") else "min_max"
    entry, relative = statistics[tag], {}

    def keys(kind: str) -> list[KeyStats]:
        stats_of = entry.get(kind) or {}
        names = (config.get(kind) or {}).get("modality_keys") or list(stats_of)  # the vector's key order
        action_configs = (config.get(kind) or {}).get("action_configs") or [] if kind == "action" else []
        out = []
        for index, name in enumerate(names):
            key_config = action_configs[index] if index < len(action_configs) else {}
            key_config = key_config if isinstance(key_config, dict) else {}
            source, mode = stats_of, modes.get(name, default_mode)
            if kind == "action" and kwargs.get("use_relative_action") and rep(key_config.get("rep")) == "relative":
                source, mode = entry.get("relative_action") or {}, "min_max"  # relative keys keep min/max
                kind_of = rep(key_config.get("type", "non_eef"))
                if kind_of not in ("non_eef", "eef") or (
                    kind_of == "eef" and rep(key_config.get("format")) != "xyz+rot6d"
                ):
                    raise ValueError(f"{root / PROCESSOR_FILE}: relative action {name!r}: unsupported {key_config}")
                relative[name] = (key_config.get("state_key") or name, kind_of)
            if name not in source:
                raise ValueError(f"{path}: embodiment {tag!r} has no statistics for {kind} key {name!r}")
            stats = {k: np.asarray(v, dtype=np.float64) for k, v in source[name].items()}
            width = int(np.asarray(stats.get("min", stats.get("mean"))).shape[-1])
            out.append(KeyStats(name, width, mode, stats))
        return out

    delta = (config.get("action") or {}).get("delta_indices")
    normalizer = EmbodimentNormalizer(
        tag, ids[tag], keys("state"), keys("action"), relative, len(delta) if delta else None
    )
    state_names = {key.name for key in normalizer.state_keys}
    for name, (state_key, _) in relative.items():
        if state_key not in state_names:
            raise ValueError(f"{root / PROCESSOR_FILE}: relative action {name!r} needs state key {state_key!r}")
    return normalizer
