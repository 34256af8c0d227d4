#!/usr/bin/env bash
# Issue 17's check that the redesigned fast path is as fast as before, on one H200 (fp16, random full-size
# N1.5 weights written once): `groot-sage bench` at batch 1 with the head and the eager path in the same run,
# and 60 back-to-back calls at batch 64, for this tree and for the tree before the redesign (BEFORE: a
# `git archive 3d1ff21 groot_sage_ros` unpacked there), alternating, in one call on the device.
# Run from the repository root with the offline wheels in .whl; OUT = the results folder.
set -u
OUT=${OUT:-/tmp/fast_path_out}
BEFORE=${BEFORE:-.before}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPYCACHEPREFIX=/tmp/pycache
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
PYTHONPATH=/tmp/site:$PWD python3 -m groot_sage_ros.cli tiny-checkpoint --full-size --out /tmp/full > /dev/null
for round in ${ROUNDS:-1}; do
  for tree in ${ORDER:-now before}; do
    root=$PWD; [ "$tree" = before ] && root=$PWD/$BEFORE
    PYTHONPATH=/tmp/site:$root timeout 250 python3 -m groot_sage_ros.cli bench --checkpoint /tmp/full \
        --device cuda --dtype float16 --batch 1 --actions --compare eager --throughput-batch 64 --iters 60 \
        --out "$OUT/${tree}_$round.json" > "$OUT/${tree}_$round.log" 2>&1 || tail -c 2000 "$OUT/${tree}_$round.log"
  done
done
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
keys = ("backbone_ms_median", "full_ms_median", "action_head_ms_median", "throughput_fps", "peak_allocated_gb",
        "eager_backbone_ms_median", "features_vs_eager", "actions_vs_eager")
rows = {p.stem: {k: json.load(open(p)).get(k) for k in keys} for p in sorted(out.glob("*_[12].json"))}
json.dump(rows, open(out / "summary.json", "w"), indent=2)
print(json.dumps(rows, indent=1))
PY
