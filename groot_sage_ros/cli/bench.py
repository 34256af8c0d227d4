"""``groot-sage bench``: synchronised timings of the backbone (and head), throughput and memory, as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from .common import add_runtime_args, count, positive_int


def add_parser(sub) -> None:
    from ..families import DEFAULT_FAMILY

    parser = sub.add_parser(
        "bench",
        help="synchronised backbone timings (median, p95), throughput and peak GPU memory as JSON",
        epilog="example: groot-sage bench --full-size-random --device cuda --batch 1 --out bench.json",
    )
    parser.add_argument("--checkpoint", help="checkpoint folder or cached HF repo id")
    parser.add_argument("--full-size-random", action="store_true", help="random weights in the released model's shapes")
    parser.add_argument(
        "--family", default=DEFAULT_FAMILY, help=f"the family of --full-size-random (default: {DEFAULT_FAMILY})"
    )
    parser.add_argument("--device", default="cuda", help="torch device string (default: cuda)")
    parser.add_argument("--dtype", default="float16", help="the model's dtype (default: float16)")
    parser.add_argument("--batch", type=positive_int, default=1, help="frame sets per call (default: 1)")
    parser.add_argument("--cameras", type=positive_int, default=1, help="cameras per frame set (default: 1)")
    parser.add_argument("--iters", type=positive_int, default=50, help="timed calls (default: 50)")
    parser.add_argument("--warmup", type=count, default=5, help="untimed calls first (default: 5)")
    parser.add_argument("--actions", action="store_true", help="also time the action head and the full model")
    parser.add_argument(
        "--compare",
        default=None,
        metavar="eager",
        help="also time the plain eager path in the same run and compare the outputs",
    )
    parser.add_argument(
        "--throughput-batch", type=positive_int, default=None, help="also measure frames/s at this batch"
    )
    parser.add_argument(
        "--throughput-calls",
        type=positive_int,
        default=None,
        help="back-to-back calls the throughput is the median of (default: iters / 5, at least 3)",
    )
    parser.add_argument(
        "--start-times",
        action="store_true",
        help="start-to-first-features of fresh processes: cold and warm compile cache, eager",
    )
    add_runtime_args(parser)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--command-line", default=None, help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import run_bench, start_times
    from ..engine import RuntimeConfig, load_engine, random_engine
    from ..owned_files import check_user_file, write_user_file

    if args.compare not in (None, "eager"):
        raise ValueError(f"--compare {args.compare!r}: the only path to compare with is 'eager'")
    runtime = RuntimeConfig.from_attributes(args)
    if args.out:
        check_user_file(args.out)  # before the work, not after
    if args.full_size_random:
        engine = random_engine(
            args.family, device=args.device, dtype=args.dtype, action_head=args.actions, runtime=runtime
        )
    elif args.checkpoint:
        engine = load_engine(
            args.checkpoint, device=args.device, dtype=args.dtype, action_head=args.actions, runtime=runtime
        )
    else:
        raise ValueError("bench needs --checkpoint C or --full-size-random")
    start = engine.start_report()
    report = {
        "start_in_process_s": engine.start_seconds,
        "precision": start.get("precision"),
        "compile_cache": {"hits": start.get("compile_cache_hits", 0), "misses": start.get("compile_cache_misses", 0)},
    }
    report.update(
        run_bench(
            engine,
            batch=args.batch,
            cameras=args.cameras,
            iters=args.iters,
            warmup=args.warmup,
            actions=args.actions,
            compare_eager=args.compare == "eager",
            throughput_batch=args.throughput_batch,
            throughput_calls=args.throughput_calls,
        )
    )
    if args.start_times:
        if not args.checkpoint:
            raise ValueError("--start-times needs --checkpoint (a start loads weights from disk)")
        del engine
        report.update(start_times(args.checkpoint, args.device, args.dtype))
    report["command"] = "groot-sage " + " ".join(sys.argv[1:]) if args.command_line is None else args.command_line
    print(json.dumps(report, indent=2))
    if args.out:
        write_user_file(args.out, report)  # never through a link, never over an output of ours
    return 0
