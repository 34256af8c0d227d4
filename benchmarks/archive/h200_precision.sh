#!/usr/bin/env bash
# Issue 18's figures on one H200: every precision on a full-size random N1.5 checkpoint with outlier channels
# (`tiny-checkpoint --full-size --outliers`). PART=a: `groot-sage bench` at batch 1 with the head (backbone,
# full model, peak memory with the head, start) and 60 back-to-back calls at batch 64. PART=b: the backbone
# alone (its peak memory), `quantize-check` gates for int8_weight and fp8, and groot_node's own stage timings
# (benchmarks/node_stages.py). Run from the repository root with the offline wheels in .whl; OUT = results.
set -u
OUT=${OUT:-/tmp/precision_out}
PART=${PART:-a}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONPYCACHEPREFIX=/tmp/pycache
CLI="python3 -m groot_sage_ros.cli"
LOG="$OUT/part_$PART.log"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv >> "$LOG"
[ -f /tmp/full/config.json ] || $CLI tiny-checkpoint --full-size --outliers --out /tmp/full >> "$LOG" 2>&1
if [ "$PART" = a ]; then
  for p in fp16 int8_weight fp8; do
    timeout 200 $CLI bench --checkpoint /tmp/full --device cuda --dtype float16 --batch 1 --actions --iters 60 \
        --throughput-batch 64 --throughput-calls 60 --precision $p --out "$OUT/${p}_head.json" >> "$LOG" 2>&1 \
        || echo "bench $p failed" | tee -a "$LOG"
  done
else
  for p in fp16 int8_weight fp8; do
    timeout 120 $CLI bench --checkpoint /tmp/full --device cuda --dtype float16 --batch 1 --iters 30 \
        --precision $p --out "$OUT/${p}_backbone.json" >> "$LOG" 2>&1 || echo "bench $p failed" | tee -a "$LOG"
  done
  python3 -c "import numpy as np; from PIL import Image; y, x = np.mgrid[0:480, 0:640]; \
Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save('/tmp/cam.png')"
  timeout 200 $CLI quantize-check --checkpoint /tmp/full --image /tmp/cam.png --instruction "pick up the cube" \
      --device cuda --compile off --precision int8_weight --precision fp8 --actions --seeds 3 --json "$OUT/gates.json" \
      2>&1 | tee -a "$LOG"
  timeout 150 python3 benchmarks/node_stages.py --checkpoint /tmp/full --device cuda --precision fp16 \
      --seconds 15 --out "$OUT/node_fp16.json" >> "$LOG" 2>&1 || echo "node stages failed" | tee -a "$LOG"
fi
if [ "$PART" = b ]; then  # one file for everything (the device returns a handful of files)
  python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
merged = {}
for path in sorted(out.glob("*.json")):
    if path.name != "h200_precision.json":
        merged[path.stem] = json.loads(path.read_text())
        path.unlink()
(out / "h200_precision.json").write_text(json.dumps(merged, indent=2))
PY
fi
tail -c 2500 "$LOG"
