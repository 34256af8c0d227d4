#!/usr/bin/env bash
# Issue 28's GPU run: the full-size random teacher with its head, features (and the teacher's attention to
# the image tokens) from ARC renders, then students at equal steps, each scored by evaluate through the
# teacher's head (action error ratio, token cosine, batch-1 latency):
#   features   MSE + cosine
#   both       features + actions (--action-weight 1); both@W: --action-weight W
#   actions    actions only
#   attention  features + attention transfer (--attention-weight 1)
# then the downstream probe (distilled vs from scratch vs the teacher's features) and the latency and peak
# memory of student + head against teacher + head. Each stage is skipped when its output is there, so a
# second call on a warm machine goes on where the first stopped. Results in $OUT (*.json, metrics_*.jsonl).
#
#   bash benchmarks/student_arms.sh features both          # part 1
#   bash benchmarks/student_arms.sh actions attention      # part 2
#   bash benchmarks/student_arms.sh probe latency          # part 3
#
# A dry run of the whole flow on the CPU with the tiny teacher:
#   DEVICE=cpu SIZE= LIMIT=12 STEPS=20 SAMPLES=4 BATCH=4 W=/tmp/dry OUT=/tmp/dry/out \
#       bash benchmarks/student_arms.sh features both actions attention probe latency
set -euo pipefail
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-1500}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE---full-size}
LIMIT=${LIMIT:-800}
SAMPLES=${SAMPLES:-64}
BATCH=${BATCH:-32}
ACTION_SAMPLES=${ACTION_SAMPLES:-0}  # > 0: the action term on that many samples of each batch
W=${W:-/tmp}
mkdir -p "$OUT"
g="python3 -m groot_sage_ros.cli"
# shellcheck disable=SC2086  # $SIZE is empty or one flag
[ -f $W/full/config.json ] || $g tiny-checkpoint $SIZE --out $W/full
[ -f $W/arc_bag/metadata.yaml ] || $g make-bag --out $W/arc_bag --arc --limit $LIMIT --compressed
if [ ! -f $W/features/manifest.json ]; then
  $g extract $W/arc_bag --checkpoint $W/full --camera-topics /camera/image_raw/compressed --out $W/features \
      --device $DEVICE --batch-size $BATCH --attention
fi
python3 -c "import json; m = json.load(open('$W/features/manifest.json')); json.dump(m['timing'], open('$OUT/extract_with_attention_timing.json', 'w'), indent=2)"
common="--device $DEVICE --max-steps $STEPS --batch-size $BATCH --eval-every 500 --save-every 500 --log-every 250"
for arm in "$@"; do
  case $arm in
    features) objective="" ;;
    both|both@*)
      weight=${arm#both@}; [ "$weight" = both ] && weight=1
      objective="--action-weight $weight --teacher $W/full --action-samples-per-step $ACTION_SAMPLES" ;;
    actions) objective="--mse-weight 0 --cosine-weight 0 --action-weight 1 --teacher $W/full" ;;
    attention) objective="--attention-weight 1" ;;
    probe)
      [ -f $W/arc_probe.json ] || python3 benchmarks/arc_probe.py --student $W/s_features/student.safetensors \
          --dataset $W/features --teacher $W/full --device $DEVICE --batch $BATCH --out $W/arc_probe.json
      cp $W/arc_probe.json "$OUT/"
      continue ;;
    latency)
      [ -f $W/student_head_latency.json ] || python3 benchmarks/student_head_latency.py \
          --student $W/s_both/student.safetensors --teacher $W/full --device $DEVICE --out $W/student_head_latency.json
      cp $W/student_head_latency.json "$OUT/"
      continue ;;
    *) echo "unknown stage $arm: expected features, both, both@W, actions, attention, probe or latency" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  [ -f $W/s_$arm/student.safetensors ] || $g distill $W/features --out $W/s_$arm $common $objective
  cp $W/s_$arm/metrics.jsonl "$OUT/metrics_$arm.jsonl"
  [ -f $W/eval_$arm.json ] || $g evaluate --student $W/s_$arm/student.safetensors --dataset $W/features \
      --teacher $W/full --device $DEVICE --embodiment --action-samples $SAMPLES --seeds 3 --json $W/eval_$arm.json \
      --report-dir $W/s_$arm/evaluation || [ $? -eq 1 ]  # 1: the student misses the action gate (reported)
  cp $W/eval_$arm.json "$OUT/"
done
