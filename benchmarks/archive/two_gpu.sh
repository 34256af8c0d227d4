#!/usr/bin/env bash
# Extraction and distillation on one GPU and on two under torchrun (nvidia-h200-x2), same data, same
# global batch. NVLink multicast stays off (the machine's policy; set here too for safety).
set -euo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# A hung rank prints every thread's stack: faulthandler dumps them on SIGABRT, which `timeout` sends; the
# step is killed 10 s later if it still runs, and nothing outlives the script (no background watchdog).
export PYTHONFAULTHANDLER=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
g="python3 -m groot_sage_ros.cli"
tr="python3 -m torch.distributed.run --standalone --nproc_per_node 2 -m groot_sage_ros.cli"
$g tiny-checkpoint --full-size --out /tmp/full
$g make-bag --out /tmp/arc_a --arc --limit 200 --compressed
$g make-bag --out /tmp/arc_b --arc --limit 200 --arc-split eval --compressed
extract="extract /tmp/arc_a /tmp/arc_b --checkpoint /tmp/full --camera-topics /camera/image_raw/compressed --device cuda --batch-size 32 --shard-size 64"
CUDA_VISIBLE_DEVICES=0 $g $extract --out /tmp/one | tee "$OUT/extract_1gpu.txt"
timeout -s ABRT -k 10 240 $tr $extract --out /tmp/two 2>&1 | tee "$OUT/extract_2gpu.txt"
distill="distill /tmp/one --device cuda --max-steps 300 --batch-size 32 --eval-every 100 --save-every 300 --log-every 100"
CUDA_VISIBLE_DEVICES=0 $g $distill --out /tmp/student_one | tee "$OUT/distill_1gpu.txt"
timeout -s ABRT -k 10 300 $tr $distill --out /tmp/student_two 2>&1 | tee "$OUT/distill_2gpu.txt"
python3 - "$OUT/compare.json" <<'PY'
import json, sys, torch
from groot_sage_ros.offline.dataset import FeatureDataset
one, two = FeatureDataset("/tmp/one"), FeatureDataset("/tmp/two")
assert len(one) == len(two), (len(one), len(two))
worst = 0.0
for i in range(len(one)):
    a, b = one[i], two[i]
    assert a["source"] == b["source"] and a["layout"] == b["layout"] and torch.equal(a["images"], b["images"])
    worst = max(worst, (a["features"].float() - b["features"].float()).abs().max().item())
loss = lambda run: [json.loads(l)["loss"] for l in open(f"/tmp/{run}/metrics.jsonl")]
l1, l2 = loss("student_one"), loss("student_two")
rel = max(abs(x - y) / max(abs(x), 1e-9) for x, y in zip(l1, l2))
report = {"samples": len(one), "same_sources_layouts_images": True, "features_max_abs_diff": worst,
          "loss_steps": len(l1), "loss_max_rel_diff": rel, "loss_first_last_1gpu": [l1[0], l1[-1]],
          "loss_first_last_2gpu": [l2[0], l2[-1]]}
print(json.dumps(report, indent=2)); json.dump(report, open(sys.argv[1], "w"), indent=2)
PY
