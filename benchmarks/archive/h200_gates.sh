#!/usr/bin/env bash
# Issue 18's accuracy gates on one H200: quantize-check for int8_weight and fp8 on a full-size random N1.5
# checkpoint with outlier channels (OUTLIERS= for none), then fp8 again with exact (not fast) FP8 accumulation, to see what the
# fast accumulation costs in accuracy. Run from the repository root with the offline wheels in .whl.
set -u
OUT=${OUT:-/tmp/gates_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONPYCACHEPREFIX=/tmp/pycache
rm -rf /tmp/full_outliers
python3 -m groot_sage_ros.cli tiny-checkpoint --full-size ${OUTLIERS---outliers} --out /tmp/full_outliers
python3 -c "import numpy as np; from PIL import Image; y, x = np.mgrid[0:480, 0:640]; \
Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save('/tmp/cam.png')"
timeout 200 python3 -m groot_sage_ros.cli quantize-check --checkpoint /tmp/full_outliers --image /tmp/cam.png \
    --instruction "pick up the cube" --device cuda --compile off --precision int8_weight --precision fp8 --actions \
    --seeds 3 --json "$OUT/gates.json"
[ -n "${SKIP_EXACT:-}" ] && exit 0
timeout 150 python3 - <<'PY'
import argparse, json, os
import numpy as np
from PIL import Image
from groot_sage_ros.fastpath import precision
from groot_sage_ros.quantize_check import print_report, run_quantize_check

precision.FP8_FAST_ACCUMULATION = False
args = argparse.Namespace(checkpoint="/tmp/full_outliers", device="cuda", dtype="float16", actions=True, embodiment=None,
                          seeds=3, precisions=["fp8"], compile="off", cuda_graphs=True)
report, _ = run_quantize_check(args, ([np.asarray(Image.open("/tmp/cam.png"))], "pick up the cube"), None)
print("exact FP8 accumulation:")
print_report(report)
json.dump(report, open(os.path.join(os.environ.get("OUT", "/tmp/gates_out"), "gates_exact_accumulation.json"), "w"), indent=2)
PY
