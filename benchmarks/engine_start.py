"""Where an engine's start goes, in fresh processes: interpreter and torch, CUDA initialisation, the
transformers modules the backbone is built from, ``load_engine`` (the rest of the package, building on
the meta device, reading the weights, the fast path) and the warm-up; then, in one more fresh process
with torch and transformers imported first, a cProfile of ``load_engine`` and of the warm-up, their top
entries by cumulative time.

    python benchmarks/engine_start.py --checkpoint CKPT --device cuda --runs 2 --out engine_start.json

Run twice in a row, the second run sees a warm bytecode cache and page cache, as a robot's restart does
(where the environment says PYTHONDONTWRITEBYTECODE, as some containers do, every process compiles every
module again: each run records whether bytecode was written).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

STAGES = r"""
import json, sys, time
start = time.perf_counter()
if sys.argv[3] == "lean":  # as the console scripts start (groot_sage_ros/entry_points.py)
    from groot_sage_ros.entry_points import keep_unused_packages_out
    keep_unused_packages_out()
import torch
times = {"import_torch_s": time.perf_counter() - start}
tick = time.perf_counter()
if sys.argv[2].startswith("cuda"):
    torch.zeros(1, device=sys.argv[2]); torch.cuda.synchronize()
times["cuda_init_s"] = time.perf_counter() - tick
tick = time.perf_counter()
import transformers.modeling_utils
times["import_transformers_modeling_s"] = time.perf_counter() - tick
tick = time.perf_counter()
from groot_sage_ros.engine import load_engine
times["import_engine_s"] = time.perf_counter() - tick
tick = time.perf_counter()
engine = load_engine(sys.argv[1], device=sys.argv[2], dtype="float16", warmup=False)
times["load_engine_s"] = time.perf_counter() - tick  # the family's modelling modules included
tick = time.perf_counter()
engine.warmup()
if sys.argv[2].startswith("cuda"):
    torch.cuda.synchronize()
times["warmup_s"] = time.perf_counter() - tick
times["total_s"] = time.perf_counter() - start
times = {k: round(v, 3) for k, v in times.items()}
times["family"], times["bytecode_written"] = engine.facts.family, not sys.dont_write_bytecode
times["imports"] = sys.argv[3]  # lean: SciPy and scikit-learn kept out; all: whatever transformers imports
print(json.dumps(times))
"""

PROFILE = r"""
import cProfile, io, pstats, sys
from groot_sage_ros.entry_points import keep_unused_packages_out
keep_unused_packages_out()
import torch
import transformers.modeling_utils  # the process-level imports, outside the profile
from groot_sage_ros.engine import load_engine


def profiled(call, title):
    profiler = cProfile.Profile()
    profiler.enable()
    out = call()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
    print(f"===== {title} =====")
    print(text.getvalue())
    return out


engine = profiled(lambda: load_engine(sys.argv[1], device=sys.argv[2], dtype="float16", warmup=False), "load_engine")
profiled(engine.warmup, "warmup")
"""


def run(script: str, *argv: str) -> str:
    """A fresh process's stdout; its stderr on the way out when it fails."""
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"a measuring process failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder")
    parser.add_argument("--device", default="cuda", help="torch device string (default: cuda)")
    parser.add_argument("--runs", type=int, default=2, help="fresh processes in a row (default: 2)")
    parser.add_argument(
        "--compare-imports",
        action="store_true",
        help="after the runs as the console scripts start, as many with whatever transformers imports (default: off)",
    )
    parser.add_argument("--out", help="also write the JSON here (and the profile beside it, .txt)")
    args = parser.parse_args()
    runs = []
    for imports in ["lean", "all"] if args.compare_imports else ["lean"]:
        for _ in range(args.runs):
            runs.append(json.loads(run(STAGES, args.checkpoint, args.device, imports).strip().splitlines()[-1]))
    profile = run(PROFILE, args.checkpoint, args.device)
    report = {"runs": runs, "command": "python benchmarks/engine_start.py " + " ".join(sys.argv[1:])}
    if args.device.startswith("cuda"):
        import torch

        report["gpu"] = torch.cuda.get_device_name(0)
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        Path(args.out).with_suffix(".txt").write_text(profile)


if __name__ == "__main__":
    main()
