"""Where GR00T N1.5 keeps its normalisation statistics, and its embodiments' category ids."""

from __future__ import annotations

STATISTICS_FILE = "experiment_cfg/metadata.json"

# Embodiment tag -> category id of the action head's per-embodiment layers (Isaac-GR00T's embodiment tags).
EMBODIMENT_IDS = {"new_embodiment": 31, "oxe_droid": 17, "agibot_genie1": 26, "gr1": 24}


def embodiment_id(tag: str) -> int:
    if tag not in EMBODIMENT_IDS:
        raise ValueError(f"embodiment tag {tag!r} has no known id; expected one of {sorted(EMBODIMENT_IDS)}")
    return EMBODIMENT_IDS[tag]
