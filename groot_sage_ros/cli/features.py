"""``groot-sage features``: the backbone's features of one frame set (shape, layout, norms, timing), and with
``--actions`` one action chunk."""

from __future__ import annotations

import argparse
import json
import os
import time

from .common import add_frame_set_args, add_runtime_args, add_state_args, positive_int


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "features",
        help="backbone features of one frame set: shape, dtype, layout, norms, timing",
        epilog="example: groot-sage features --checkpoint nvidia/GR00T-N1.5-3B --image front.jpg "
        "--image wrist.jpg --instruction 'pick up the cube' --device cuda --actions --embodiment gr1 --seed 0",
    )
    add_frame_set_args(parser)
    parser.add_argument("--dtype", default="float16", help="float16 (default), bfloat16 or float32")
    parser.add_argument("--tokenizer", default=None, help="tokenizer/processor folder (default: built-in)")
    parser.add_argument("--repeat", type=positive_int, default=3, help="timed runs after loading (default: 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--actions", action="store_true", help="also run the action head and print a chunk")
    add_state_args(parser)
    parser.add_argument("--seed", type=int, default=None, help="noise seed for a reproducible chunk")
    add_runtime_args(parser)
    parser.set_defaults(run=run)


def seconds_since_process_start() -> float | None:
    """Seconds since this process started (Linux /proc; 10 ms resolution), or None elsewhere."""
    try:
        with open("/proc/self/stat") as handle:
            start_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..engine import RuntimeConfig, load_engine
    from ..serving.images import read_image

    imported_s = seconds_since_process_start()  # interpreter start and imports
    images = [read_image(path) for path in args.image]
    engine = load_engine(
        args.checkpoint,
        device=args.device,
        dtype=args.dtype,
        tokenizer=args.tokenizer,
        action_head=args.actions,
        runtime=RuntimeConfig.from_attributes(args),
    )
    times, first_features_s = [], None
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = engine.extract(images, args.instruction)
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
        times.append((time.perf_counter() - start) * 1000.0)
        first_features_s = first_features_s if times[1:] else seconds_since_process_start()
    report = features_report(engine, result, args.checkpoint, times)
    report.update(imports_s=imported_s, first_features_s=first_features_s)  # process start to the real frame's features
    if args.actions:
        report.update(predict_chunk(engine, result, args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, result.layout, args.actions)
    return 0


def features_report(engine, result, checkpoint, times: list[float]) -> dict:
    """What ``features`` reports of one result: shapes, norms by token kind, start and call timings."""
    import torch

    started = engine.start_report()
    norms = result.features[0].float().norm(dim=-1)  # (L,)
    layout = result.layout
    cuda = engine.device.type == "cuda"
    return {
        "checkpoint": str(checkpoint),
        "device": str(engine.device),
        "features_shape": list(result.features.shape),
        "dtype": str(result.features.dtype).removeprefix("torch."),
        "finite": bool(torch.isfinite(result.features).all()),
        "layout": layout.to_dict(),
        "token_norm": {"mean": norms.mean().item(), "min": norms.min().item(), "max": norms.max().item()},
        "image_token_norm_mean": [norms[a:b].mean().item() for a, b in layout.image_ranges],
        "instruction_token_norm_mean": norms[slice(*layout.instruction_range)].mean().item(),
        "load_s": started.get("load_s", 0.0),
        "warmup_s": started.get("warmup_s", 0.0),
        "start_kind": started.get("start_kind"),
        "cuda_graphs": started.get("cuda_graphs", 0),
        "compile_cache": {
            "hits": started.get("compile_cache_hits", 0),
            "misses": started.get("compile_cache_misses", 0),
        },
        "peak_reserved_gb": torch.cuda.max_memory_reserved(engine.device) / 1e9 if cuda else None,
        "extract_ms": {"median": sorted(times)[len(times) // 2], "first": times[0], "runs": len(times)},
    }


def print_report(report: dict, layout, actions: bool) -> None:
    print(f"checkpoint   {report['checkpoint']} on {report['device']}")
    print(f"features     shape {tuple(report['features_shape'])} {report['dtype']}, finite: {report['finite']}")
    for k, (a, b) in enumerate(layout.image_ranges):
        print(f"camera {k}     tokens [{a}, {b}), mean norm {report['image_token_norm_mean'][k]:.3f}")
    a, b = layout.instruction_range
    print(f"instruction  tokens [{a}, {b}) of {layout.seq_len}, mean norm {report['instruction_token_norm_mean']:.3f}")
    norm = report["token_norm"]
    print(f"token norm   mean {norm['mean']:.3f}, min {norm['min']:.3f}, max {norm['max']:.3f}")
    if actions:
        keys = ", ".join(f"{k}: {w}" for k, w in report["action_keys"].items())
        first = " ".join(f"{v:.3f}" for v in report["action_chunk"][0])
        print(
            f"actions      {len(report['action_chunk'])} x {len(report['action_chunk'][0])} ({keys}), first row {first}"
        )
    timing = report["extract_ms"]
    print(
        f"timing       load {report['load_s']:.2f} s, warm-up {report['warmup_s']:.2f} s, extract median "
        f"{timing['median']:.1f} ms over {timing['runs']} runs (first {timing['first']:.1f} ms)"
    )


def predict_chunk(engine, result, args) -> dict:
    """One unnormalised action chunk: rows of the action keys' values, concatenated."""
    import numpy as np

    from .common import read_state

    policy = engine.action_policy(args.embodiment)
    state = read_state(args.state) or policy.zero_state()
    per_key = policy.chunk(result, state, args.seed)  # key -> (H, width), robot units
    rows = np.concatenate(list(per_key.values()), axis=1)  # (H, sum of widths)
    return {
        "embodiment": args.embodiment,
        "seed": args.seed,
        "action_keys": {k: v.shape[1] for k, v in per_key.items()},
        "action_chunk": rows.round(6).tolist(),
    }
