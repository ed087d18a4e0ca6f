#!/bin/bash
# The measurements of set L (bench/RESULTS.md). /tmp/b0 = build of e3da0cd (set K's code),
# /tmp/b = build of main after the loop-cpu and client merges. Run from a quiet machine.
R=/work/main/bench/results/2026-12-04-L
mkdir -p $R/ab
cd /tmp
{
echo "# A/B: /tmp/b0 = e3da0cd, /tmp/b = $(git -C /work/main rev-parse --short HEAD); each build's own flowlog-bench against its own flowlogd"
echo "# BUILD/bench/flowlog-bench --flowlogd=BUILD/flowlogd --modes=step,batch --conns=16,64 --reps=1 --reads=0 --verify"
for i in 1 2 3 4 5 6; do
  if [ $((i % 2)) = 1 ]; then order="b0 b"; else order="b b0"; fi
  for b in $order; do echo "## pair $i build $b $(date -u +%H:%M:%S)"; /tmp/$b/bench/flowlog-bench --flowlogd=/tmp/$b/flowlogd --modes=step,batch --conns=16,64 --reps=1 --reads=0 --verify 2>&1 | grep -E "^flowlog +(step|batch)|verify"; done
done
} > $R/ab/server-pairs.txt 2>&1
{
echo "# the client alone: b0's and b's flowlog-bench (libflowlog) against the same flowlogd (/tmp/b)"
echo "# BUILD/bench/flowlog-bench --flowlogd=/tmp/b/flowlogd --modes=step --conns=16,64 --reps=1 --reads=0"
for i in 1 2 3 4; do
  if [ $((i % 2)) = 1 ]; then order="b0 b"; else order="b b0"; fi
  for b in $order; do echo "## pair $i client $b $(date -u +%H:%M:%S)"; /tmp/$b/bench/flowlog-bench --flowlogd=/tmp/b/flowlogd --modes=step --conns=16,64 --reps=1 --reads=0 2>&1 | grep -E "^flowlog +step"; done
done
} > $R/ab/client-pairs.txt 2>&1
{
echo "# step/1 (flowlog-bench --flowlogd --modes=step --conns=1 --reps=1 --reads=0) against store-bench --groups=1 --reps=1 --reads=10, build /tmp/b"
for i in 1 2 3 4 5; do echo "## pair $i $(date -u +%H:%M:%S)"; /tmp/b/bench/flowlog-bench --flowlogd=/tmp/b/flowlogd --modes=step --conns=1 --reps=1 --reads=0 2>&1 | grep -E "^flowlog +step"; /tmp/b/bench/store-bench --reps=1 --groups=1 --reads=10 2>/dev/null | grep -E "^1 "; done
} > $R/step1-vs-store1.txt 2>&1
date -u +%H:%M:%S > $R/compare.start
/work/main/bench/compare --builddir=/tmp/b --reps=3 --verify --out=/tmp/cmpL > $R/compare.txt 2> $R/compare.stderr
date -u +%H:%M:%S > $R/compare.end
echo done > $R/battery.done
