"""``groot-sage tiny-checkpoint``: a small (or full-size) random checkpoint in a family's real layout."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from ..families import DEFAULT_FAMILY

    parser = sub.add_parser(
        "tiny-checkpoint",
        help="write a small random checkpoint in a GR00T family's real layout",
        epilog="example: groot-sage tiny-checkpoint --out /tmp/tiny_groot",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    parser.add_argument(
        "--full-size", action="store_true", help="the released model's dims instead (~7 GB for N1.5-3B)"
    )
    parser.add_argument("--family", default=DEFAULT_FAMILY, help=f"a GR00T model family (default: {DEFAULT_FAMILY})")
    parser.add_argument(
        "--outliers",
        action="store_true",
        help="plant a trained model's few large-magnitude channels (norm scales and the weights "
        "reading them) in the LLM and ViT layers: realistic weights for quantize-check",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..families import by_name

    family = by_name(args.family, "--family")
    path = family.write_tiny(
        args.out, seed=args.seed, raw=family.full_size_config() if args.full_size else None, outliers=args.outliers
    )
    kind = ("full-size" if args.full_size else "tiny") + (" outlier" if args.outliers else "")
    print(f"wrote {kind} random {family.name} checkpoint to {path}")
    return 0
