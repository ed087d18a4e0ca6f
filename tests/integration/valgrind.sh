#!/usr/bin/env bash
# valgrind.sh: flowlogd under valgrind (memcheck) for a short session driven by the CLI: a batch
# append, single appends, an error, every kind of read, a subscriber receiving live events,
# verify, then SIGTERM. Passes when valgrind reports no invalid access, no use of uninitialised
# values and no definitely lost block (it would exit with 99), and flowlogd exits 0.
#
# Plain builds only: valgrind cannot run ASan binaries (make check exports FLOWLOG_SANITIZERS=yes
# in --enable-sanitizers builds).
. "$top_srcdir/tests/integration/lib.sh"

if [ "${FLOWLOG_SANITIZERS:-}" = yes ]; then
    echo "1..0 # SKIP valgrind does not run ASan binaries"
    exit 0
fi
if ! command -v valgrind >/dev/null 2>&1; then
    echo "1..0 # SKIP valgrind is not installed (apt-get install valgrind)"
    exit 0
fi

plan 14
export SYNC=full
VG_LOG=$WORK/valgrind.log

# flowlogd through valgrind; exec, so SRV_PID is valgrind's pid and its exit status ours.
# libtool --mode=execute runs the real binary should flowlogd ever be a libtool wrapper.
cat >"$WORK/flowlogd-vg" <<EOF
#!/bin/sh
exec "$top_builddir/libtool" --mode=execute valgrind --error-exitcode=99 --leak-check=full \\
    --errors-for-leak-kinds=definite --show-leak-kinds=definite --num-callers=30 \\
    --log-file="$VG_LOG" "$FLOWLOGD" "\$@"
EOF
chmod +x "$WORK/flowlogd-vg"
FLOWLOGD=$WORK/flowlogd-vg

start_server vg || exit 1
ok "flowlogd started under valgrind"
DATA=$WORK/vg/data

out=$(fl append --batch <"$top_srcdir/tools/demo-data.jsonl")
n=$(grep -c . "$top_srcdir/tools/demo-data.jsonl")
expect_json "a batch of $n events is acknowledged" "$out" \
    "len(L) == $n and [x['seq'] for x in L] == list(range(1, $n + 1))"

# A subscriber on its own connection, from the start of the log.
timeout 120 "$FLOWLOG" --server "$SRV_ADDR" --data "$DATA" --json log --follow >"$WORK/follow.out" &
follower=$!

out=$(printf '%s\n' \
    '{"type": "flow_registered", "event_id": "vg-1", "data": {"flow_id": "vg", "flow_name": "vg.xml"}}' \
    '{"type": "run_started", "data": {"run_id": "vg-run", "flow_id": "vg", "job_run_id": "7"}}' \
    '{"type": "run_status", "data": {"run_id": "vg-run", "status": "SUCCESS"}}' | fl append)
expect_json "single appends are acknowledged" "$out" "len(L) == 3 and all('seq' in x for x in L)"
out=$(printf '%s\n' '{"type": "flow_registered", "event_id": "vg-1", "data": {"flow_id": "vg", "flow_name": "vg.xml"}}' | fl append)
expect_json "a retried event is a duplicate" "$out" "d['duplicate'] is True"
out=$(printf '%s\n' '{"type": "run_started", "data": {"run_id": "x", "flow_id": "nope"}}' | fl append)
expect_error "an event for an unknown flow is not_found" not_found "$out" $?

out=$(fl log --from 1)
expect_json "log returns every event" "$out" "len(L) == $n + 3"
out=$(fl state vg)
expect_json "state" "$out" "d['migration_flows'][0]['migration_status'] == 'DONE'"
out=$(fl history vg)
expect_json "history" "$out" "d['count'] == 1"
out=$(fl timeline --run vg-run)
expect_json "timeline" "$out" "len(L) == 2"
out=$(fl table migration_runs --where flow_id=vg)
expect_json "table" "$out" "len(L) == 1 and L[0]['status'] == 'SUCCESS'"
check "the subscriber received the history and the live events" \
    wait_until 60 grep -q '"vg-run"' "$WORK/follow.out"
kill "$follower" 2>/dev/null
wait "$follower" 2>/dev/null
out=$(fl verify)
expect_json "verify" "$out" "d['ok'] is True"

stop_server "$SRV_PID"
st=$?
check "SIGTERM: flowlogd exits 0 under valgrind (99 would be a memcheck error)" test "$st" = 0
diag "$(grep -E 'Command:|in use at exit|definitely lost|ERROR SUMMARY' "$VG_LOG")"
if grep -q "ERROR SUMMARY: 0 errors" "$VG_LOG" &&
    { grep -q "definitely lost: 0 bytes" "$VG_LOG" || ! grep -q "definitely lost:" "$VG_LOG"; }; then
    ok "valgrind: no invalid access, no uninitialised value, no definite leak"
else
    not_ok "valgrind: no invalid access, no uninitialised value, no definite leak"
    diag "$(grep -v '^==[0-9]*== *$' "$VG_LOG" | head -n 120)"
fi
