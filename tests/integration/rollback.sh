#!/usr/bin/env bash
# rollback.sh: flow_rollback and reads as of a seq or a time. A rollback makes the flow's rows
# what they were right after to_seq; the log keeps everything; state --as-of-seq s answers the
# same before and after later rollbacks, for every s; as-of-time picks the last event <= T.
. "$top_srcdir/tests/integration/lib.sh"

plan 20
start_server main || exit 1
DATA=$WORK/main/data
RUN=abc-123_run_1706543210

fl append --batch <"$top_srcdir/tools/demo-data.jsonl" >/dev/null
# Snapshots of every seq before any rollback.
for s in $(seq 1 13); do fl state abc-123 --as-of-seq "$s" >"$WORK/before.$s"; done
fl state abc-123 --as-of-seq 7 >"$WORK/at7"

# tables_equal A B: the two states' rows are equal, except last_update_ts (a rollback sets it).
tables_equal() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for s in (a, b):
    for k in ("as_of_seq", "version"):
        s.pop(k)
    for r in s["migration_flows"]:
        r.pop("last_update_ts")
sys.exit(0 if a == b else 1)
EOF
}

out=$(fl rollback abc-123 --to-seq 7 --reason "redo iteration 2")
expect_json "rollback to seq 7 is appended as seq 14" "$out" "d['seq'] == 14 and d['duplicate'] is False"
rb_ts=$(printf '%s' "$out" | pyj "d['ts']")
fl state abc-123 >"$WORK/now"
check "after the rollback the flow's rows are those right after seq 7" tables_equal "$WORK/now" "$WORK/at7"
expect_json "... except last_update_ts = the rollback's ts, and the version counts it" "$(cat "$WORK/now")" \
    "d['migration_flows'][0]['last_update_ts'] == '$rb_ts' and d['version'] == 14 and d['migration_flows'][0]['migration_status'] == 'RUNNING'"
out=$(fl state abc-123 --as-of-seq 13)
expect_json "state --as-of-seq 13 (before the rollback) still shows the flow DONE" "$out" \
    "d['migration_flows'][0]['migration_status'] == 'DONE' and len(d['migration_human_requests']) == 1"
out=$(fl log --flow abc-123)
expect_json "the log keeps every event, the rollback included" "$out" \
    "[e['seq'] for e in L] == list(range(1, 15)) and L[-1]['type'] == 'flow_rollback' and L[-1]['data'] == {'flow_id': 'abc-123', 'to_seq': 7, 'reason': 'redo iteration 2'}"
out=$(fl timeline --run $RUN)
expect_json "the run's timeline keeps the rolled-back events" "$out" "[e['seq'] for e in L] == list(range(2, 14))"

# Iteration 2 again, differently: the rolled-back rows are gone, so this is allowed.
out=$(fl append --batch <<'EOF'
{"type": "iteration_step", "data": {"run_id": "abc-123_run_1706543210", "iteration_num": 2, "step": "fix_errors", "step_status": "RUNNING", "summary": "second try"}}
{"type": "exec_result", "data": {"run_id": "abc-123_run_1706543210", "iteration_num": 2, "job_type": "validation_job", "status": "TIMEOUT", "runtime_s": 900}}
{"type": "iteration_step", "data": {"run_id": "abc-123_run_1706543210", "iteration_num": 2, "step": "fix_errors", "step_status": "FAILED", "error": "timeout"}}
{"type": "run_status", "data": {"run_id": "abc-123_run_1706543210", "status": "FAILED", "flow_status": "NEEDS_HUMAN"}}
EOF
)
expect_json "rolled-back rows can be written again (exec result, run status)" "$out" "[x['seq'] for x in L] == [15, 16, 17, 18]"
fl state abc-123 >"$WORK/s18"
expect_json "the new history: NEEDS_HUMAN, one success less" "$(cat "$WORK/s18")" "
(f := d['migration_flows'][0]) and f['migration_status'] == 'NEEDS_HUMAN' and f['successful_conversions'] == 0 and
[(x['iteration_num'], x['status']) for x in d['migration_exec_results']] == [(1, 'FAILED'), (2, 'TIMEOUT')] and
d['attempt_history'][0]['status'] == 'FAILED'"

same=1
for s in $(seq 1 13); do
    fl state abc-123 --as-of-seq "$s" >"$WORK/after.$s"
    cmp -s "$WORK/before.$s" "$WORK/after.$s" || { same=0; diag "as-of-seq $s changed"; }
done
check "state --as-of-seq s for s = 1..13 is unchanged by the rollback and what followed" test $same = 1
out=$(fl state abc-123 --as-of-seq 14)
check "state --as-of-seq 14 is the rolled-back state" tables_equal <(printf '%s' "$out") "$WORK/at7"

# A second rollback, to a seq inside the new history.
out=$(fl rollback abc-123 --to-seq 16 --reason "undo the timeout verdict" --event-id rb-2)
expect_json "a second rollback (to 16) is seq 19" "$out" "d['seq'] == 19"
fl state abc-123 --as-of-seq 16 >"$WORK/at16"
fl state abc-123 >"$WORK/now2"
check "... and brings back the rows right after seq 16" tables_equal "$WORK/now2" "$WORK/at16"
out=$(fl rollback abc-123 --to-seq 16 --reason "undo the timeout verdict" --event-id rb-2)
expect_json "a retried rollback (same event_id) is a duplicate" "$out" "d['seq'] == 19 and d['duplicate'] is True"
same=1
for s in 14 18; do
    fl state abc-123 --as-of-seq "$s" >"$WORK/again.$s"
done
tables_equal "$WORK/again.14" "$WORK/at7" || same=0
cmp -s "$WORK/again.18" "$WORK/s18" || same=0
check "as-of reads before the second rollback are unchanged" test $same = 1

# Rolling back before the run started removes the run; its id stays used.
out=$(fl rollback abc-123 --to-seq 1 --reason "start over")
fl state abc-123 >"$WORK/now3"
expect_json "rollback to the registration: no runs, no attempts" "$(cat "$WORK/now3")" \
    "d['migration_runs'] == [] and d['attempt_history'] == [] and d['migration_flows'][0]['migration_status'] == 'NOT_STARTED' and d['migration_flows'][0]['total_attempts'] == 0"
out=$(printf '%s\n' "{\"type\": \"run_started\", \"data\": {\"run_id\": \"$RUN\", \"flow_id\": \"abc-123\"}}" | fl append); st=$?
expect_error "a run_id used before a rollback cannot be used again" already_exists "$out" $st
out=$(fl rollback abc-123 --to-seq 0 --reason "before time"); st=$?
expect_error "a rollback before the flow's registration" bad_request "$out" $st

# as-of-time: the state after the last event with ts <= T.
fl log >"$WORK/log"
T=$(pyj "L[16]['ts']" <"$WORK/log")
want=$(pyj "max(e['seq'] for e in L if e['ts'] <= '$T')" <"$WORK/log")
out=$(fl state abc-123 --as-of-time "$T")
expect_json "state --as-of-time T is taken at the last seq with ts <= T ($want)" "$out" "d['as_of_seq'] == $want"
check "... and equals state --as-of-seq $want" cmp -s <(printf '%s\n' "$out") <(fl state abc-123 --as-of-seq "$want")

out=$(fl verify)
expect_json "verify passes after three rollbacks" "$out" "d['ok'] is True"
