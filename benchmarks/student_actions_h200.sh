#!/usr/bin/env bash
# Issue 20's GPU figures (prepared, not yet run: this session's device time was spent on issues 17 and 18).
# The full-size random teacher with its head; ARC renders and the photo bags in .gpu_data/ as in
# student_h100.sh; three students at equal steps (features only, features + actions, actions only),
# each scored through the teacher's head; then batch-1 latency and peak memory of student + head against
# teacher + head. Results in $OUT.
set -euo pipefail
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-1500}
mkdir -p "$OUT"
g="python3 -m groot_sage_ros.cli"
[ -f /tmp/full/config.json ] || $g tiny-checkpoint --full-size --out /tmp/full
[ -d /tmp/arc_bag ] || $g make-bag --out /tmp/arc_bag --arc --limit 800 --compressed
[ -f /tmp/features/manifest.json ] || $g extract /tmp/arc_bag .gpu_data/photos_0 .gpu_data/photos_1 \
    --checkpoint /tmp/full --camera-topics /camera/image_raw/compressed --out /tmp/features --device cuda --batch-size 32
common="--device cuda --max-steps $STEPS --batch-size 32 --eval-every 250 --save-every 500 --log-every 250"
$g distill /tmp/features --out /tmp/s_features $common
$g distill /tmp/features --out /tmp/s_both $common --action-weight 1 --teacher /tmp/full
$g distill /tmp/features --out /tmp/s_actions $common --mse-weight 0 --cosine-weight 0 --action-weight 1 --teacher /tmp/full
for arm in features both actions; do
  $g evaluate --student /tmp/s_$arm/student.safetensors --dataset /tmp/features --teacher /tmp/full --device cuda \
      --embodiment --action-samples 64 --seeds 3 --json "$OUT/eval_$arm.json" --report-dir /tmp/s_$arm/evaluation
done
python3 benchmarks/student_head_latency.py --student /tmp/s_both/student.safetensors --teacher /tmp/full \
    --device cuda --out "$OUT/student_head_latency.json"
