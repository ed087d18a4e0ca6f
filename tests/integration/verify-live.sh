#!/usr/bin/env bash
# verify-live.sh: verify and backup run beside the server's work, each from a snapshot of its
# own. While the verify of a 20,000-event store runs, a second verify and a backup are refused
# with unavailable, pings and appends are answered before the verify is, and the report is of
# the store as the verify began. The server holds every job after its work while a gate file
# exists (FLOWLOGD_TEST_JOB_GATE), so that "while it runs" lasts until the commands below are
# done, however slowly this machine starts them (a hold of 2.5 s did not always last: each
# command start here took up to 1.5 s while the verify ran). A backup taken while a writer
# appends is a store that verifies and holds exactly the events up to the head it reports.
# Before, both ran on the event loop and every client waited for them.
. "$top_srcdir/tests/integration/lib.sh"

plan 13
GATE=$WORK/job-gate
FLOWLOGD_TEST_JOB_GATE=$GATE start_server main || exit 1
DATA=$WORK/main/data
N=20

# N batches of 1,000 flow registrations (each batch is one append of its own).
python3 - "$WORK" "$N" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
for b in range(n):
    with open(f"{work}/batch-{b}.jsonl", "w") as f:
        for i in range(1000):
            k = b * 1000 + i
            f.write(json.dumps({"type": "flow_registered",
                                "data": {"flow_id": f"flow-{k}", "flow_name": f"flow-{k}.xml"}}) + "\n")
PY
loaded=0
for b in $(seq 0 $((N - 1))); do
    fl append --batch <"$WORK/batch-$b.jsonl" >/dev/null && loaded=$((loaded + 1000))
done
check "loaded $((N * 1000)) events" test "$loaded" -eq $((N * 1000))

ms() { date +%s%3N; }
touch "$GATE"
( fl verify >"$WORK/verify.out"; echo $? >"$WORK/verify.rc"; ms >"$WORK/verify.done" ) &
vpid=$!
# the verify reaches the server and starts (it then runs, and waits at the gate)
wait_until 20 grep -q "verify started" "$WORK/main/server.log" || diag "no verify started in the log"

out=$(ev flow_registered '{"flow_id": "during", "flow_name": "during.xml"}' | fl append); st=$?
appended=$(ms)
expect_json "an append during the verify is acknowledged, after the verify's snapshot" "$out" \
    "L[0]['seq'] == $((N * 1000 + 1)) and not L[0]['duplicate']"
out=$(fl verify); st=$?
expect_error "a second verify while one runs: unavailable, answered at once" unavailable "$out" $st
out=$(fl backup during-verify); st=$?
expect_error "a backup while the verify runs: unavailable" unavailable "$out" $st
out=$(fl ping); st=$?
check "ping answered while the verify runs" test $st -eq 0
rm -f "$GATE"
wait $vpid
done_at=$(cat "$WORK/verify.done")
check "the append was answered before the verify ($appended ms < $done_at ms)" \
    test "$appended" -lt "$done_at"
expect_json "the verify passed, reporting the store as it began (head $((N * 1000)))" \
    "$(cat "$WORK/verify.out")" "d['ok'] is True and d['head_seq'] == $((N * 1000)) and d['problems'] == []"
out=$(fl verify)
expect_json "a verify afterwards sees the append" "$out" \
    "d['ok'] is True and d['head_seq'] == $((N * 1000 + 1))"

# ---- a backup while a writer appends ----
L=20000
python3 -c 'import json, sys
for i in range(int(sys.argv[1])):
    print(json.dumps({"type": "flow_registered", "data": {"flow_id": f"late-{i}", "flow_name": "late.xml"}}))' $L >"$WORK/late.jsonl"
( fl append <"$WORK/late.jsonl" >"$WORK/late.out"; echo $? >"$WORK/late.rc" ) &
wpid=$!
wait_until 20 test -s "$WORK/late.out" || diag "the writer did not start"
out=$(fl backup live); st=$?
wait $wpid
expect_json "a backup taken while a writer appends (its first acknowledgement came before)" "$out" \
    "d['name'] == 'live' and d['head_seq'] > $((N * 1000 + 1))"
bhead=$(printf '%s\n' "$out" | pyj "d['head_seq']")
check "the writer's $L appends all acknowledged" test "$(cat "$WORK/late.rc")" -eq 0
"$FLOWLOGD" --data "$DATA/backups/live" --listen 127.0.0.1:0 --port-file "$WORK/b.port" \
    --sync none >"$WORK/b.log" 2>&1 &
SRV_PIDS+=($!)
if wait_until 30 test -s "$WORK/b.port"; then
    out=$("$FLOWLOG" --server "127.0.0.1:$(cat "$WORK/b.port")" --data "$DATA/backups/live" --json verify)
else
    out='{}'
    diag "flowlogd did not serve the backup: $(tail -n 5 "$WORK/b.log")"
fi
expect_json "the backup verifies and ends at the head it reported ($bhead)" "$out" \
    "d['ok'] is True and d['head_seq'] == $bhead"
out=$(fl verify)
expect_json "the store itself: every event of the writer after the verify's" "$out" \
    "d['ok'] is True and d['head_seq'] == $((N * 1000 + 1 + L))"

# ---- the test gate itself: a path that is not absolute stops the server at start ----
FLOWLOGD_TEST_JOB_GATE=gate "$FLOWLOGD" --data "$WORK/hold-data" --listen 127.0.0.1:0 \
    --sync none >"$WORK/hold.log" 2>&1; st=$?
check "FLOWLOGD_TEST_JOB_GATE=gate: flowlogd refuses to start, naming the variable" \
    sh -c "test $st -ne 0 && grep -q 'FLOWLOGD_TEST_JOB_GATE=gate: expected an absolute path' '$WORK/hold.log'"
