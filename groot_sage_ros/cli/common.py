"""What the subcommands share: the one-line argument parser, options built from config fields, the
engine's speed knobs, a frame set from image files, a robot state."""

from __future__ import annotations

import argparse
import dataclasses

from ..options import COUNT, POSITIVE_INT, argument, flag, parser_for
from ..serving.instructions import check_text

# argparse types for the options without a config field (features, quantize-check, bench)
positive_int = parser_for(POSITIVE_INT)
count = parser_for(COUNT)


class OneLineParser(argparse.ArgumentParser):
    """argparse with the error as one line (``prog: error: ...``) instead of the usage block; exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_options(parser, config_cls, *names: str, **overrides) -> None:
    """``--name`` for each field ``name`` of ``config_cls`` (``--no-name`` for a flag that defaults to on),
    with the field's default, check, choices and help (the required ones, without a default, each command
    declares itself). ``overrides`` go to every ``add_argument``."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for name in names:
        field = fields[name]
        kwargs = argument(config_cls, name, **overrides)
        option = f"--no-{name.replace('_', '-')}" if field.default is True else flag(name)
        parser.add_argument(option, **kwargs)


def optional_fields(config_cls, *exclude: str) -> list[str]:
    """The fields of ``config_cls`` that have a default, in declaration order, less ``exclude``."""
    return [
        f.name
        for f in dataclasses.fields(config_cls)
        if f.name not in exclude
        and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)
    ]


def instruction_text(text: str) -> str:
    """An argparse type: non-empty text within the limit every instruction has (the family's processor
    checks special tokens once the checkpoint is known)."""
    try:
        check_text(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--instruction: ")) from None
    return text


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """The engine's speed knobs (``engine.RuntimeConfig``), shared by every command that runs the teacher."""
    from ..offline.config import RuntimeOptions

    add_options(parser, RuntimeOptions, "compile", "cuda_graphs", "compile_cache_dir", "precision", "fp8_min_rows")
    add_options(parser, RuntimeOptions, "precision_keep_fp16", nargs="*", metavar="NAME")


def add_frame_set_args(parser: argparse.ArgumentParser) -> None:
    """A checkpoint and one frame set from image files, for the commands that run one frame set."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or cached HF repo id")
    parser.add_argument("--image", action="append", required=True, help="image file, once per camera, in order")
    parser.add_argument("--instruction", required=True, type=instruction_text, help="the instruction")
    parser.add_argument("--device", default="cpu", help="torch device string (default: cpu)")


def add_state_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embodiment", default=None, help="embodiment tag in the checkpoint's statistics (default: the only one there)"
    )
    parser.add_argument("--state", help="JSON file {state key: [values]} in robot units (default: zeros)")


def read_state(path: str | None) -> dict | None:
    """A robot state from a JSON file (``--state``), or None."""
    import json

    if not path:
        return None
    with open(path) as handle:
        return json.load(handle)
