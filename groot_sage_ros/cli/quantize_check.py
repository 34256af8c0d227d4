"""``groot-sage quantize-check``: a low precision against fp16 on your weights and frames, with gates."""

from __future__ import annotations

import argparse

from .common import add_frame_set_args, add_options, add_state_args, positive_int


def add_parser(sub) -> None:
    from ..fastpath.precision import PRECISIONS
    from ..offline.config import RuntimeOptions

    parser = sub.add_parser(
        "quantize-check",
        help="a low precision against fp16 on your weights and frames: feature and action agreement, gates",
        epilog="example: groot-sage quantize-check --checkpoint nvidia/GR00T-N1.5-3B --image front.jpg "
        "--instruction 'pick up the cube' --device cuda --precision int8_weight --actions --embodiment gr1",
    )
    add_frame_set_args(parser)
    parser.add_argument(
        "--precision",
        dest="precisions",
        action="append",
        choices=[p for p in PRECISIONS if p != "fp16"],
        help="a precision to check, once per precision (default: int8_weight)",
    )
    parser.add_argument("--dtype", default="float16", help="the engine dtype fp16 means here (default: float16)")
    parser.add_argument("--actions", action="store_true", help="also compare the action head's chunks")
    add_state_args(parser)
    parser.add_argument("--seeds", type=positive_int, default=3, help="noise seeds per chunk comparison (default: 3)")
    parser.add_argument("--json", help="also write the report to this JSON file")
    add_options(parser, RuntimeOptions, "compile", "cuda_graphs")
    add_options(parser, RuntimeOptions, "precision_keep_fp16", nargs="*", metavar="NAME")
    parser.add_argument(
        "--sensitivity",
        action="store_true",
        help="also quantise one layer at a time (the first --precision) and rank the layers by the feature "
        "error each adds: the candidates for --precision-keep-fp16",
    )
    parser.add_argument(
        "--auto",
        action="store_true",
        help="with the ranking, propose the smallest set of most sensitive layers that, kept at fp16, passes "
        "the gates (and the share of the weights it keeps)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..owned_files import check_user_file
    from ..quantize_check import print_report, run_quantize_check, write_json
    from ..serving.images import read_image
    from .common import read_state

    frame_set = ([read_image(path) for path in args.image], args.instruction)
    if args.json:
        check_user_file(args.json)  # before the work, not after
    report, passed = run_quantize_check(args, frame_set, read_state(args.state))
    if args.json:
        write_json(args.json, report)
    print_report(report)
    return 0 if passed else 1
