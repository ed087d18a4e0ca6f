#!/usr/bin/env bash
# bench/smoke.sh: the one benchmark run under `make check`, at a tiny scale, so the benchmarks
# cannot rot: the generator's invariants, store-bench end to end, and flowlog-bench against a
# real flowlogd with --verify. Figures printed here mean nothing. TAP output.
set -uo pipefail
b=${top_builddir:-.}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/flowlog-bench-smoke.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0
fails=0
ok() {
    n=$((n + 1))
    if [[ $1 == 0 ]]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi
}
echo "1..6"

"$b/bench/workload-dump" --check --tenants=2 --flows=7 --runs=3 --iters=2 --patches=3 >"$tmp/check.out" 2>&1
ok $? "workload generator: counts, disjoint ordered flows, unique event ids, determinism"

lines=$("$b/bench/workload-dump" --tenants=1 --flows=5 | wc -l)
[[ $lines == 236 ]]
ok $? "workload-dump prints 236 JSON lines for 5 flows (got $lines)"

TMPDIR=$tmp "$b/bench/store-bench" --tenants=1 --flows=3 --reps=1 --groups=1,8 --reads=5 --quiet \
    >"$tmp/store.out" 2>&1
ok $? "store-bench runs at a tiny scale"

"$b/bench/flowlog-bench" --flowlogd="$b/flowlogd" --data-parent="$tmp" --tenants=2 --flows=2 \
    --reps=1 --conns=1,4 --verify --quiet --max-seconds=30 >"$tmp/flowlog.out" 2>&1
ok $? "flowlog-bench against a fresh flowlogd, step and batch, with --verify"
grep -Eq '^rebuild \(the server.s, over the wire\): [1-9][0-9]* events, [0-9]+ events/s' "$tmp/flowlog.out"
ok $? "flowlog-bench reports the server's rebuild rate after the reads"

# compare runs for minutes with peers make check does not have; its shell and awk must at least
# parse (a quote inside the awk program once broke the table at the end of a run)
bash -n "${top_srcdir:-.}/bench/compare" >"$tmp/compare.out" 2>&1
ok $? "bench/compare parses"

if [[ $fails != 0 ]]; then
    for f in "$tmp"/*.out; do echo "# --- $f"; sed 's/^/# /' "$f"; done
fi
exit 0
