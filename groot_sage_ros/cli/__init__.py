"""``groot-sage``: the offline tools (no ROS needed). Each subcommand's --help has an example.

Errors a user can cause (a bad argument, a missing or damaged file, a busy or foreign output folder, no
CUDA, a disk that fills up) end the command with one line on stderr and exit code 2; argument ranges are
checked when the command line is parsed. An error in the package itself still shows its traceback.

One module per subcommand, each with its ``add_parser`` beside its ``run``; the offline commands' settings
are dataclasses (``offline/config.py``) that own their defaults and checks.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import user_error_line
from ..options import from_namespace
from . import (
    bench,
    dataset_from_bag,
    distill,
    evaluate,
    extract,
    features,
    make_bag,
    quantize_check,
    tiny_checkpoint,
)
from .common import OneLineParser

COMMANDS = (tiny_checkpoint, features, quantize_check, make_bag, extract, dataset_from_bag, distill, evaluate, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="groot-sage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def parse_config(argv: list) -> object:
    """What a command line asks for: the command's config (offline commands) or its parsed arguments."""
    args = build_parser().parse_args([str(a) for a in argv])
    config_cls = getattr(args, "config_cls", None)
    return from_namespace(config_cls, args) if config_cls is not None else args


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # paths with bytes that are not UTF-8 print escaped, not as an error
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        config_cls = getattr(args, "config_cls", None)
        return args.run(from_namespace(config_cls, args) if config_cls is not None else args)
    except KeyboardInterrupt:
        print(f"groot-sage {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        print(f"groot-sage {args.command}: error: {user_error_line(err)}", file=sys.stderr)
        return 2
    finally:
        if "torch.distributed" in sys.modules:  # extract and distill under torchrun
            from ..offline.distributed import end_distributed

            end_distributed()
