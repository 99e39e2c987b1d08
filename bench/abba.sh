#!/usr/bin/env bash
# Compare two source trees' throughput run by run, alternating A B, B A, ... (ABBA), one fresh server each:
#   bash bench/abba.sh TREE_A TREE_B ROUNDS DATA_DIR LOG [bench/throughput.py options...]
# Each tree runs its own bench/throughput.py with PYTHONPATH=TREE/src; LOG gets each run's figures and the load.
set -u
A=$1; B=$2; N=$3; DIR=$4; LOG=$5; shift 5
: > "$LOG"
for i in $(seq 1 "$N"); do
  if (( i % 2 )); then order="$A $B"; else order="$B $A"; fi
  for tree in $order; do
    out=$(cd "$tree" && PYTHONPATH="$tree/src" timeout 1200 python bench/throughput.py --repeat 1 --latency-tasks 0 --dir "$DIR" "$@" 2>&1)
    echo "== $tree round $i load $(cut -d' ' -f1 /proc/loadavg)" >> "$LOG"
    echo "$out" | grep -iE "ratio|tasks/s|kiln|bare|cpu" | head -12 >> "$LOG"
  done
done
