"""Dataclass fields that carry their own help and check: the one home of an offline command's defaults.

    @dataclass
    class DistillConfig:
        max_steps: int = option(1000, "training steps", POSITIVE_INT)

    DistillConfig(max_steps=0)                     -> ValueError("--max-steps: 0: expected a whole number >= 1")
    parser.add_argument("--max-steps", **argument(DistillConfig, "max_steps"))   # default, type, help from the field
    config = from_namespace(DistillConfig, args)   # the parsed arguments as the config, checked

The command line checks a value when it is parsed (argparse's one-line error); the dataclass checks it
again when built from Python, so the library and the CLI accept the same values.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, NamedTuple


class Check(NamedTuple):
    """A value's rule and the words for what it expects (the error says ``expected <expected>``)."""

    kind: type
    test: Callable[[Any], bool]
    expected: str


POSITIVE_INT = Check(int, lambda v: v >= 1, "a whole number >= 1")
COUNT = Check(int, lambda v: v >= 0, "a whole number >= 0")
POSITIVE_FLOAT = Check(float, lambda v: 0 < v < float("inf"), "a number > 0")
NON_NEGATIVE_FLOAT = Check(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
FRACTION = Check(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def option(default, help: str, check: Check | None = None, choices: tuple | None = None) -> Any:
    """A dataclass field with its help text, its check and its choices."""
    metadata = {"help": help, "check": check, "choices": choices}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def passes(check: Check, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN
        return False
    return (check.kind is float or isinstance(value, int)) and check.test(value)


def validate(config) -> None:
    """ValueError naming the option (``--max-steps``) whose value breaks its field's check or choices."""
    for field in dataclasses.fields(config):
        value, check, choices = getattr(config, field.name), field.metadata.get("check"), field.metadata.get("choices")
        if check is not None and value is not None and not passes(check, value):
            raise ValueError(f"{flag(field.name)}: {value!r}: expected {check.expected}")
        if choices and value not in choices:
            raise ValueError(f"{flag(field.name)}: {value!r}: expected one of {list(choices)}")


def parser_for(check: Check) -> Callable[[str], Any]:
    """An argparse type: the text as ``check.kind`` that passes ``check``, else its one-line error."""

    def parse(text: str):
        try:
            value = check.kind(text)
        except ValueError:
            value = None
        if value is None or not passes(check, value):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {check.expected}")
        return value

    return parse


def argument(config_cls, name: str, help: str | None = None, **overrides) -> dict:
    """``add_argument`` keywords for field ``name`` of ``config_cls``: its default, its type (checked), its
    choices, and its help with the default."""
    field = {f.name: f for f in dataclasses.fields(config_cls)}[name]
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    kwargs: dict = {"default": default, "dest": name}
    check, choices = field.metadata.get("check"), field.metadata.get("choices")
    if check is not None:
        kwargs["type"] = parser_for(check)
    elif type(default) in (int, float):  # an unchecked number: still parsed as one
        kwargs["type"] = type(default)
    if choices:
        kwargs["choices"] = choices
    text = help or field.metadata.get("help", "")
    if isinstance(default, bool):
        kwargs["action"] = "store_false" if default else "store_true"
        kwargs.pop("type", None)
        if default:  # the flag is --no-<name>: it turns the setting off
            text = f"turn off: {text} (on by default)"
    elif default is not None and default != "" and "default" not in text:
        text = f"{text} (default: {default})"
    kwargs["help"] = text
    kwargs.update(overrides)
    return kwargs


def from_namespace(config_cls, args: argparse.Namespace, **values):
    """``config_cls`` from the parsed arguments (the fields it has), ``values`` on top."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{**{name: value for name, value in vars(args).items() if name in known}, **values})


def default_of(config_cls, name: str):
    """A field's default, for another config whose default is the same by design (one home)."""
    field = {f.name: f for f in dataclasses.fields(config_cls)}[name]
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
