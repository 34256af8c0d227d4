"""The registry of GR00T model families: which family a ``config.json`` belongs to.

family = detect(raw_config, "ckpt/config.json")   # or one clear error for an unknown family
family = by_name(facts.family)                    # from a recorded TokenFacts
"""

from __future__ import annotations

from typing import Any

from .base import ModelFamily
from .n1_5 import FAMILY as N1_5
from .n1_7 import FAMILY as N1_7

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (N1_5, N1_7)}
DEFAULT_FAMILY = N1_5.name  # what `tiny-checkpoint` writes and the demo runs


def detect(raw: dict[str, Any], source: str = "config.json") -> ModelFamily:
    """The family whose schema ``raw`` follows; ValueError naming the file and what it says otherwise."""
    for family in FAMILIES.values():
        if family.matches(raw):
            return family
    found = {key: raw.get(key) for key in ("model_type", "architectures") if key in raw}
    raise ValueError(
        f"{source}: not a supported GR00T model family ({found or 'no model_type or architectures'}); "
        f"supported: {sorted(FAMILIES)}"
    )


def by_name(name: str, source: str = "record") -> ModelFamily:
    """A family by its registry name, or the short form users type (the name without "gr00t_")."""
    if name not in FAMILIES and f"gr00t_{name}" in FAMILIES:
        name = f"gr00t_{name}"
    if name not in FAMILIES:
        raise ValueError(f"{source}: model family {name!r} is not supported; supported: {sorted(FAMILIES)}")
    return FAMILIES[name]
