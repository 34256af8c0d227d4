#!/usr/bin/env bash
# Issue 20's GPU figures: the full-size random teacher with its head, features from ARC renders (plus the
# photo bags in .gpu_data/ when present, as in student_h100.sh), students at equal steps (features only,
# features + actions, actions only), each scored through the teacher's head; then batch-1 latency and peak
# memory of student + head against teacher + head. Results in $OUT.
#
#   bash benchmarks/archive/student_actions_h200.sh features both      # train and score these arms
#   bash benchmarks/archive/student_actions_h200.sh actions latency    # the third arm, then the latency script
#
# Every stage is skipped when its output is already there, so a second call on a warm machine goes on
# where the first stopped (the device machine keeps /tmp only while it stays warm). A dry run of the whole flow
# on the CPU with the tiny teacher:
#   DEVICE=cpu SIZE= LIMIT=16 STEPS=20 SAMPLES=4 BATCH=4 W=/tmp/dry OUT=/tmp/dry/out \
#       bash benchmarks/archive/student_actions_h200.sh features both actions latency
set -euo pipefail
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-1500}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE---full-size}
LIMIT=${LIMIT:-800}
SAMPLES=${SAMPLES:-64}
BATCH=${BATCH:-32}
W=${W:-/tmp}
mkdir -p "$OUT"
g="python3 -m groot_sage_ros.cli"
photos=$(ls -d .gpu_data/photos_* 2>/dev/null || true)
# shellcheck disable=SC2086  # $SIZE is empty or one flag
[ -f $W/full/config.json ] || $g tiny-checkpoint $SIZE --out $W/full
[ -f $W/arc_bag/metadata.yaml ] || $g make-bag --out $W/arc_bag --arc --limit $LIMIT --compressed
# shellcheck disable=SC2086  # $photos is a list of folders
[ -f $W/features/manifest.json ] || $g extract $W/arc_bag $photos --checkpoint $W/full \
    --camera-topics /camera/image_raw/compressed --out $W/features --device $DEVICE --batch-size $BATCH
common="--device $DEVICE --max-steps $STEPS --batch-size $BATCH --eval-every 500 --save-every 500 --log-every 250"
for arm in "$@"; do
  case $arm in
    features) objective="" ;;
    both) objective="--action-weight 1 --teacher $W/full" ;;
    actions) objective="--mse-weight 0 --cosine-weight 0 --action-weight 1 --teacher $W/full" ;;
    latency)
      python3 benchmarks/student_head_latency.py --student $W/s_both/student.safetensors --teacher $W/full \
          --device $DEVICE --out "$OUT/student_head_latency.json"
      continue ;;
    *) echo "unknown arm $arm: expected features, both, actions or latency" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  [ -f $W/s_$arm/student.safetensors ] || $g distill $W/features --out $W/s_$arm $common $objective
  cp $W/s_$arm/metrics.jsonl "$OUT/metrics_$arm.jsonl"
  $g evaluate --student $W/s_$arm/student.safetensors --dataset $W/features --teacher $W/full --device $DEVICE \
      --embodiment --action-samples $SAMPLES --seeds 3 --json "$OUT/eval_$arm.json" --report-dir $W/s_$arm/evaluation
done
