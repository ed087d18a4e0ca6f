#!/usr/bin/env bash
# errors.sh: every error code a client can reach, through the CLI: bad_request, unauthenticated,
# forbidden, not_found, already_exists, invalid_transition, conflict (with the flow's version),
# idempotency_mismatch, too_large; atomic batches (index of the first bad event, nothing
# appended); the order of checks; and the server still serving afterwards.
. "$top_srcdir/tests/integration/lib.sh"

plan 60
umask 077
printf 'admin-tok default admin\nreader-tok default reader\n' >"$WORK/tokens"
start_server main --tokens "$WORK/tokens" || exit 1
TOKEN=admin-tok

# append_json LINES...: append each argument as one event line (pipelined); prints the output.
append_lines() { printf '%s\n' "$@" | fl append; }

fl append --batch >/dev/null <<'EOF'
{"type": "flow_registered", "data": {"flow_id": "f1", "flow_name": "f1.xml"}}
{"type": "run_started", "data": {"run_id": "r1", "flow_id": "f1"}}
{"type": "run_status", "data": {"run_id": "r1", "status": "SUCCESS"}}
EOF
head_of() { fl log --from 1 | pyj "L[-1]['seq'] if L else 0"; }
head0=$(head_of)
check "setup: f1 registered, r1 SUCCESS (head 3)" test "$head0" = 3

# ---- bad_request ----
out=$(append_lines '{"type": "flow_registered", "data": {"flow_id": "f2", "flow_name": "x", "colour": "red"}}'); st=$?
expect_error "an unknown field in data" bad_request "$out" $st
expect_json "the message names the field" "$out" "'colour' in d['error']['message']"
out=$(append_lines '{"type": "flow_registered", "data": {"flow_id": "f2", "flow_name": "x"}, "extra": 1}'); st=$?
expect_error "an unknown key in the event" bad_request "$out" $st
out=$(append_lines '{"type": "flow_registered", "data": {"flow_id": "f2", "flow_name": "x", "priority": "P9"}}'); st=$?
expect_error "a value outside an enumeration" bad_request "$out" $st
out=$(append_lines '{"type": "run_started", "data": {"run_id": "r2"}}'); st=$?
expect_error "a required field missing" bad_request "$out" $st
out=$(append_lines '{"type": "flow_registered", "data": {"flow_id": "f2", "flow_name": null}}'); st=$?
expect_error "a required field given as null" bad_request "$out" $st
out=$(append_lines '{"type": "iteration_step", "data": {"run_id": "r1", "iteration_num": 1.0, "step": "s", "step_status": "RUNNING"}}'); st=$?
expect_error "a float where an integer is required" bad_request "$out" $st
out=$(append_lines '{"type": "no_such_type", "data": {}}'); st=$?
expect_error "an unknown event type" bad_request "$out" $st
out=$(append_lines '{"type": "scan_verdict", "data": {"run_id": "r1", "iteration_num": 1, "artifact_ref": "a", "scan_status": "PASSED", "findings_json": "{not json"}}'); st=$?
expect_error "findings_json that is not JSON" bad_request "$out" $st
out=$(fl table no_such_table); st=$?
expect_error "an unknown table" bad_request "$out" $st
printf '%s\n' '{"type": "flow_registered", "data": {"flow_id": "unnamed", "flow_name": ""}}' | fl append >/dev/null
out=$(fl table migration_flows --where flow_name=); st=$?
expect_json "a text column can be looked up by the empty string" "$out" "[r['flow_id'] for r in L] == ['unnamed']"
head0=$(head_of)
out=$(fl table migration_runs --where end_ts=x); st=$?
expect_error "a filter on a column without an index" bad_request "$out" $st
out=$(fl rollback f1 --to-seq 99 --reason "the future"); st=$?
expect_error "a rollback to a seq not before the rollback itself" bad_request "$out" $st
out=$(printf '' | fl append --batch); st=$?
check "an empty batch is refused before sending (exit 2)" test $st -eq 2

# ---- atomic batches ----
out=$(fl append --batch <<'EOF'
{"type": "flow_registered", "data": {"flow_id": "f3", "flow_name": "f3.xml"}}
{"type": "run_started", "data": {"run_id": "r3", "flow_id": "f3"}}
{"type": "run_status", "data": {"run_id": "r3", "status": "BOGUS"}}
EOF
); st=$?
expect_error "a batch whose third event is bad fails" bad_request "$out" $st
expect_json "... with index 2" "$out" "d['error']['index'] == 2"
check "... and nothing of it was appended" test "$(head_of)" = "$head0"
out=$(fl state f3); st=$?
expect_error "... not even the flow its first event registered" not_found "$out" $st
# the first bad event is named, also when a later one is malformed (CONTRACT.md 3)
out=$(fl append --batch <<'EOF'
{"type": "flow_registered", "data": {"flow_id": "f3", "flow_name": "f3.xml"}}
{"type": "flow_updated", "data": {"flow_id": "nope", "owner": "a"}}
{"type": "flow_updated", "data": {"flow_id": "f3", "owner": "a"}}
{"type": "flow_updated", "data": {"flow_id": "f3", "colour": "red"}}
EOF
); st=$?
expect_error "a batch with a refused event 1 and a malformed event 3" not_found "$out" $st
expect_json "... names event 1, the first bad one" "$out" "d['error']['index'] == 1"
out=$(fl append --batch <<'EOF'
{"type": "flow_registered", "data": {"flow_id": "f3", "flow_name": "f3.xml"}}
{"type": "flow_updated", "data": {"flow_id": "f3", "colour": "red"}}
EOF
); st=$?
expect_error "a batch whose events pass up to a malformed one" bad_request "$out" $st
expect_json "... names the malformed one" "$out" "d['error']['index'] == 1 and 'colour' in d['error']['message']"
check "... and nothing of either batch was appended" test "$(head_of)" = "$head0"

# ---- not_found, already_exists ----
out=$(append_lines '{"type": "run_started", "data": {"run_id": "r9", "flow_id": "nope"}}'); st=$?
expect_error "a run of an unknown flow" not_found "$out" $st
out=$(append_lines '{"type": "patch", "data": {"run_id": "nope", "iteration_num": 1, "artifact_ref": "a"}}'); st=$?
expect_error "an event of an unknown run" not_found "$out" $st
out=$(fl state nope); st=$?
expect_error "the state of an unknown flow" not_found "$out" $st
out=$(append_lines '{"type": "flow_registered", "data": {"flow_id": "f1", "flow_name": "again"}}'); st=$?
expect_error "registering a flow twice" already_exists "$out" $st
out=$(append_lines '{"type": "run_started", "data": {"run_id": "r1", "flow_id": "f1"}}'); st=$?
expect_error "reusing a run_id" already_exists "$out" $st

# ---- invalid_transition ----
out=$(append_lines '{"type": "run_status", "data": {"run_id": "r1", "status": "RUNNING"}}'); st=$?
expect_error "a run status after a terminal one" invalid_transition "$out" $st
out=$(append_lines '{"type": "iteration_step", "data": {"run_id": "r1", "iteration_num": 1, "step": "s", "step_status": "RUNNING"}}'); st=$?
expect_error "a run-level event on a finished run" invalid_transition "$out" $st
fl append --batch >/dev/null <<'EOF'
{"type": "run_started", "data": {"run_id": "r4", "flow_id": "f1"}}
{"type": "iteration_step", "data": {"run_id": "r4", "iteration_num": 1, "step": "validate", "step_status": "COMPLETED"}}
{"type": "scan_verdict", "data": {"run_id": "r4", "iteration_num": 1, "artifact_ref": "a.py", "scan_status": "PASSED"}}
{"type": "exec_result", "data": {"run_id": "r4", "iteration_num": 1, "job_type": "flow_job", "status": "FAILED"}}
EOF
out=$(append_lines '{"type": "iteration_step", "data": {"run_id": "r4", "iteration_num": 1, "step": "validate", "step_status": "RUNNING"}}'); st=$?
expect_error "an iteration step after COMPLETED" invalid_transition "$out" $st
out=$(append_lines '{"type": "scan_verdict", "data": {"run_id": "r4", "iteration_num": 1, "artifact_ref": "a.py", "scan_status": "SCANNING"}}'); st=$?
expect_error "a scan verdict going backwards" invalid_transition "$out" $st
expect_json "... naming the scan's artifact_ref, part of its key" "$out" "'a.py' in d['error']['message']"
out=$(append_lines '{"type": "exec_result", "data": {"run_id": "r4", "iteration_num": 1, "job_type": "flow_job", "status": "SUCCESS"}}'); st=$?
expect_error "a second exec result for one key" invalid_transition "$out" $st
fl append --batch >/dev/null <<'EOF'
{"type": "human_request", "data": {"run_id": "r4", "iteration_num": 1, "reason": "sast_blocked"}}
{"type": "human_resolution", "data": {"run_id": "r4", "iteration_num": 1, "status": "RESOLVED"}}
EOF
out=$(append_lines '{"type": "human_request", "data": {"run_id": "r4", "iteration_num": 1, "reason": "manual_review"}}'); st=$?
expect_error "a second human request for one iteration" invalid_transition "$out" $st
out=$(append_lines '{"type": "human_resolution", "data": {"run_id": "r4", "iteration_num": 1, "status": "IGNORED"}}'); st=$?
expect_error "resolving a request that is no longer PENDING" invalid_transition "$out" $st

# ---- conflict, with the flow's actual version ----
v=$(fl state f1 | pyj "d['version']")
out=$(append_lines "{\"type\": \"flow_status\", \"expected_version\": 1, \"data\": {\"flow_id\": \"f1\", \"migration_status\": \"STOPPED\"}}"); st=$?
expect_error "expected_version behind the flow" conflict "$out" $st
expect_json "... names the flow's actual version ($v)" "$out" "d['error']['version'] == $v and d['error']['index'] == 0"
out=$(append_lines "{\"type\": \"flow_status\", \"event_id\": \"fs-1\", \"expected_version\": $v, \"data\": {\"flow_id\": \"f1\", \"migration_status\": \"STOPPED\"}}")
expect_json "the right expected_version is accepted" "$out" "d['duplicate'] is False"
out=$(fl append --batch <<EOF
{"type": "flow_status", "expected_version": $((v + 1)), "data": {"flow_id": "f1", "migration_status": "RUNNING"}}
{"type": "flow_status", "expected_version": $((v + 2)), "data": {"flow_id": "f1", "migration_status": "STOPPED"}}
EOF
)
expect_json "in a batch each event sees the versions left by those before it" "$out" "len(L) == 2"

# ---- idempotency ----
out=$(append_lines "{\"type\": \"flow_status\", \"event_id\": \"fs-1\", \"expected_version\": $v, \"data\": {\"flow_id\": \"f1\", \"migration_status\": \"STOPPED\"}}")
expect_json "a retried event is a duplicate although its expected_version is stale now" "$out" "d['duplicate'] is True"
out=$(append_lines '{"type": "flow_status", "event_id": "fs-1", "data": {"flow_id": "f1", "migration_status": "DONE"}}'); st=$?
expect_error "the same event_id with other data" idempotency_mismatch "$out" $st
out=$(append_lines '{"type": "flow_status", "event_id": "fs-1", "data": {"flow_id": "f1", "migration_status": "BOGUS"}}'); st=$?
expect_error "form is checked before idempotency" bad_request "$out" $st

# ---- too_large ----
# findings_json within its own 1 MiB limit, but the event as a whole just over 1 MiB
python3 -c '
import json
f = json.dumps({"f": "x" * (1024 * 1024 - 20)})
print(json.dumps({"type": "scan_verdict", "data": {"run_id": "r4", "iteration_num": 2,
      "artifact_ref": "big.py", "scan_status": "PENDING", "findings_json": f}}))' >"$WORK/big-event.jsonl"
# five valid events of ~1 MB each: one frame of ~5 MB
python3 -c '
import json
f = json.dumps({"f": "y" * 999990})
for i in range(5):
    print(json.dumps({"type": "scan_verdict", "data": {"run_id": "r4", "iteration_num": 3 + i,
          "artifact_ref": "big.py", "scan_status": "PENDING", "findings_json": f}}))' >"$WORK/big-batch.jsonl"
out=$(fl append <"$WORK/big-event.jsonl"); st=$?
expect_error "one event over 1 MiB" too_large "$out" $st
out=$(fl append --batch <"$WORK/big-batch.jsonl"); st=$?
expect_error "a request frame over 4 MiB" too_large "$out" $st

# --max-event: the limit of one event is the server's (CONTRACT.md 2: configurable); the log's
# events are replayed whatever the limit of the server that reads them
MAIN_ADDR=$SRV_ADDR
start_server big --tokens "$WORK/tokens" --max-event 2000000 || exit 1
fl append --batch >/dev/null <<'EOF'
{"type": "flow_registered", "data": {"flow_id": "f4", "flow_name": "f4.xml"}}
{"type": "run_started", "data": {"run_id": "r4", "flow_id": "f4"}}
EOF
out=$(fl append <"$WORK/big-event.jsonl"); st=$?
check "--max-event 2000000 takes an event of over 1 MiB" test $st -eq 0
check "... and verify replays it" test "$(fl verify | pyj "d['ok']")" = true
stop_server "$SRV_PID"
start_server big --tokens "$WORK/tokens" --max-event 1024 || exit 1
check "restarted with --max-event 1024, verify still replays the event of over 1 MiB" \
    test "$(fl verify | pyj "d['ok']")" = true
out=$(python3 -c 'import json; print(json.dumps({"type": "flow_updated", "data": {"flow_id": "f4", "description": "d" * 1100}}))' | fl append); st=$?
expect_error "... and refuses a new event of 1.1 KB" too_large "$out" $st
expect_json "... naming the limit" "$out" "'1024' in d['error']['message']"
stop_server "$SRV_PID"
# with a small frame the event limit follows it, so that every event taken can be read back
start_server small --tokens "$WORK/tokens" --max-frame 65536 || exit 1
printf '%s\n' '{"type": "flow_registered", "data": {"flow_id": "f5", "flow_name": "f5.xml"}}' | fl append >/dev/null
out=$(python3 -c 'import json; print(json.dumps({"type": "flow_updated", "data": {"flow_id": "f5", "description": "d" * 65000}}))' | fl append); st=$?
expect_error "--max-frame 65536: an event of 65,000 bytes is over the event limit it implies" too_large "$out" $st
python3 -c 'import json; print(json.dumps({"type": "flow_updated", "data": {"flow_id": "f5", "description": "d" * 64000}}))' | fl append >/dev/null
out=$(fl log --from 2)
expect_json "... one of 64,000 bytes is taken and read back through log" "$out" "len(L[0]['data']['description']) == 64000"
# A state is one answer: a flow whose rows outgrow the frame is too_large, and the message says
# what can be read instead (state cannot be paged).
{
    ev run_started '{"run_id": "r5", "flow_id": "f5"}'
    python3 -c 'import json; print(json.dumps({"type": "iteration_step", "data": {"run_id": "r5", "iteration_num": 1, "step": "generate_code", "step_status": "RUNNING", "summary": "s" * 60000}}))'
} | fl append >/dev/null
out=$(fl state f5); st=$?
expect_error "a state over the frame limit is too_large" too_large "$out" $st
expect_json "... and its message names what to read instead" "$out" \
    "'table' in d['error']['message'] and 'timeline' in d['error']['message'] and '--max-frame' in d['error']['message']"
out=$(fl table migration_iterations --where run_id=r5)
expect_json "... and its rows can be read through table" "$out" "len(L) == 1 and len(L[0]['summary']) == 60000"
stop_server "$SRV_PID"
SRV_ADDR=$MAIN_ADDR

# ---- unauthenticated, forbidden ----
out=$(TOKEN=wrong fl ping); st=$?
expect_error "a wrong token" unauthenticated "$out" $st
check "... exits with 3" test $st -eq 3
out=$(printf '%s\n' '{"type": "flow_status", "data": {"flow_id": "f1", "migration_status": "DONE"}}' | TOKEN=reader-tok fl append); st=$?
expect_error "a reader cannot append" forbidden "$out" $st

# ---- still serving ----
out=$(fl verify)
expect_json "after all of this the server answers and verify passes" "$out" "d['ok'] is True and d['problems'] == []"
