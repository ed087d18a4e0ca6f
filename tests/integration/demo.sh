#!/usr/bin/env bash
# demo.sh: tools/demo starts flowlogd, loads the seed's data-flow example, and is idempotent
# (a second run reuses the server and loads nothing new). Run on a temporary directory and a
# picked port through the demo's test-only overrides.
. "$top_srcdir/tests/integration/lib.sh"

plan 7
export FLOWLOG_DEMO_DATA=$WORK/demo FLOWLOG_DEMO_LISTEN=127.0.0.1:0 FLOWLOG_DEMO_SYNC=none
first=$(bash "$top_srcdir/tools/demo" "$top_builddir" 2>&1)
st=$?
[ -s "$WORK/demo/flowlogd.pid" ] && SRV_PIDS+=("$(cat "$WORK/demo/flowlogd.pid")")
check "the first run succeeds" test $st -eq 0
check "... and loads 13 events" grep -q "loaded 13 events, seq 1..13" <<<"$first"
check "... and prints commands to try" grep -q "flowlog state abc-123" <<<"$first"
second=$(bash "$top_srcdir/tools/demo" "$top_builddir" 2>&1)
check "the second run reuses the running server" grep -q "already answers" <<<"$second"
check "... and loads nothing new (13 duplicates)" grep -q "already loaded (13 duplicates" <<<"$second"
SRV_ADDR=127.0.0.1:$(cat "$WORK/demo/flowlogd.port")
DATA=$WORK/demo
out=$(fl state abc-123)
expect_json "the example's flow is DONE, with two iterations and a pending human request" "$out" "
d['version'] == 13 and d['migration_flows'][0]['migration_status'] == 'DONE' and
len(d['migration_iterations']) == 2 and d['migration_human_requests'][0]['status'] == 'PENDING'"
out=$(fl log)
expect_json "the log holds the 13 events once" "$out" "len(L) == 13"
