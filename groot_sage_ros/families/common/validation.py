"""Checks on configs that users hand us (a checkpoint's config.json, a student's JSON), run before allocating."""

from __future__ import annotations

from typing import Any


def check_sizes(section: str, values: dict[str, Any], names, ceiling: int = 1 << 20) -> None:
    """Each of ``names`` in ``values`` must be an int (not a bool) in 1..ceiling; ValueError naming the field."""
    for name in names:
        value = values.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
            raise ValueError(f"{section}.{name}: {value!r} is not a whole number in 1..{ceiling}")


def check_divides(section: str, values: dict[str, Any], part: str, whole: str) -> None:
    if values[whole] % values[part]:
        raise ValueError(f"{section}: {whole}={values[whole]} is not divisible by {part}={values[part]}")
