#!/usr/bin/env bash
# cli.sh: every CLI command against a real flowlogd, checked through --json: append (batch and
# pipelined), duplicates, log and its filters and paging, timeline, state (now, as of a seq and
# a time), history ordering, table filters and paging, verify, stats, ping, help, exit codes.
. "$top_srcdir/tests/integration/lib.sh"

plan 62
start_server main --unix "$WORK/main.sock" || exit 1
DATA=$WORK/main/data
DEMO=$top_srcdir/tools/demo-data.jsonl
RUN=abc-123_run_1706543210
TSRE='^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$'

# ---- ping, append ----
out=$(fl ping)
expect_json "ping: the admin token of tenant default" "$out" \
    "d['ok'] is True and d['tenant'] == 'default' and d['role'] == 'admin' and d['server'].startswith('flowlog')"

first=$(fl append --batch <"$DEMO")
expect_json "append --batch: 13 acknowledgements, seq 1..13, none a duplicate" "$first" \
    "[x['seq'] for x in L] == list(range(1, 14)) and not any(x['duplicate'] for x in L) and all(set(x) == {'seq', 'ts', 'duplicate'} for x in L)"
expect_json "acknowledgement times are RFC 3339 UTC with microseconds, non-decreasing" "$first" \
    "all(re.match(r'$TSRE', x['ts']) for x in L) and [x['ts'] for x in L] == sorted(x['ts'] for x in L)"

again=$(fl append <"$DEMO")
expect_json "append again (pipelined): every event a duplicate with its original seq and ts" \
    "$again
$first" "all(a['duplicate'] and a['seq'] == b['seq'] and a['ts'] == b['ts'] for a, b in zip(L[:13], L[13:]))"

# ---- log ----
out=$(fl log)
expect_json "log: 13 events in seq order, keys seq ts type event_id data" "$out" \
    "[e['seq'] for e in L] == list(range(1, 14)) and all(list(e) == ['seq', 'ts', 'type', 'event_id', 'data'] for e in L)"
expect_json "log: data as appended, event_id kept" \
    "$out
$(cat "$DEMO")" "all(a['data'] == b['data'] and a['type'] == b['type'] and a['event_id'] == b['event_id'] for a, b in zip(L[:13], L[13:]))"
out=$(fl log --from 5 --limit 3)
expect_json "log --from 5 --limit 3" "$out" "[e['seq'] for e in L] == [5, 6, 7]"
out=$(fl log --from 0 --limit 0)
expect_json "log --from 0 --limit 0: the start of the log, no limit (as the protocol's 0s)" "$out" "[e['seq'] for e in L] == list(range(1, 14))"
out=$(fl log --type patch)
expect_json "log --type patch" "$out" "[e['seq'] for e in L] == [4, 9]"
out=$(fl log --run $RUN)
expect_json "log --run: the run's 12 events" "$out" "[e['seq'] for e in L] == list(range(2, 14))"
out=$(fl log --flow abc-123 --from 10)
expect_json "log --flow --from" "$out" "[e['seq'] for e in L] == [10, 11, 12, 13]"

# ---- timeline ----
out=$(fl timeline --run $RUN)
expect_json "timeline --run" "$out" "[e['seq'] for e in L] == list(range(2, 14)) and L[0]['type'] == 'run_started'"
out=$(fl timeline --flow abc-123)
expect_json "timeline --flow: flow- and run-level events" "$out" \
    "[e['seq'] for e in L] == list(range(1, 14)) and L[0]['type'] == 'flow_registered'"
out=$(fl timeline); st=$?
expect_error "timeline without --run or --flow is a usage error (exit 2)" usage "$out" $st
check "usage errors exit with 2" test $st -eq 2

# ---- state ----
out=$(fl state abc-123)
expect_json "state: the flow is DONE at version 13, as of seq 13" "$out" \
    "d['flow_id'] == 'abc-123' and d['version'] == 13 and d['as_of_seq'] == 13 and d['migration_flows'][0]['migration_status'] == 'DONE'"
expect_json "state: every table and column of the contract is present" "$out" "
set(d) == {'flow_id', 'as_of_seq', 'version', 'migration_flows', 'migration_runs', 'migration_iterations',
           'migration_patches', 'migration_sast_results', 'migration_exec_results',
           'migration_human_requests', 'attempt_history'} and
set(d['migration_flows'][0]) == set('flow_id flow_name migration_status current_run_id last_update_ts server nifi_xml_path description priority owner current_attempt_id total_attempts successful_conversions first_attempt_at last_attempt_at'.split()) and
set(d['migration_runs'][0]) == set('run_id flow_id job_run_id start_ts end_ts status'.split()) and
set(d['migration_iterations'][0]) == set('run_id iteration_num step step_status ts summary error'.split()) and
set(d['migration_patches'][0]) == set('run_id iteration_num artifact_ref patch_summary diff_ref ts'.split()) and
set(d['migration_sast_results'][0]) == set('run_id iteration_num artifact_ref scan_status findings_json ts'.split()) and
set(d['migration_exec_results'][0]) == set('run_id iteration_num job_type status runtime_s error logs_ref ts'.split()) and
set(d['migration_human_requests'][0]) == set('run_id iteration_num reason status instructions ts'.split()) and
set(d['attempt_history'][0]) == set('attempt_id attempt_number flow_id job_id job_run_id status started_at completed_at duration_seconds progress_percentage validation_percentage iterations generated_notebooks error_message status_message triggered_by'.split())"
expect_json "state: the seed's example, row by row" "$out" "
(f := d['migration_flows'][0]) and (r := d['migration_runs'][0]) and (a := d['attempt_history'][0]) and
(f['current_run_id'], f['total_attempts'], f['successful_conversions']) == ('$RUN', 1, 1) and
r['status'] == 'SUCCESS' and r['end_ts'] is not None and
[(i['iteration_num'], i['step'], i['step_status']) for i in d['migration_iterations']] == [(1, 'generate_code', 'COMPLETED'), (2, 'fix_errors', 'COMPLETED')] and
[p['patch_summary'] for p in d['migration_patches']] == ['Created new processor', 'Fixed validation errors'] and
[s['scan_status'] for s in d['migration_sast_results']] == ['PASSED'] and
[(x['iteration_num'], x['status']) for x in d['migration_exec_results']] == [(1, 'FAILED'), (2, 'SUCCESS')] and
[(h['reason'], h['status']) for h in d['migration_human_requests']] == [('manual_review', 'PENDING')] and
(a['attempt_id'], a['attempt_number'], a['status'], a['iterations'], a['generated_notebooks']) == ('$RUN', 1, 'SUCCESS', 2, ['processor_1.py']) and
all(re.match(r'$TSRE', v) for v in (f['last_update_ts'], r['start_ts'], r['end_ts'], a['started_at']))"
out=$(fl state abc-123 --as-of-seq 7)
expect_json "state --as-of-seq 7: iteration 1 failed validation, run still RUNNING" "$out" "
d['as_of_seq'] == 7 and d['version'] == 7 and d['migration_flows'][0]['migration_status'] == 'RUNNING' and
d['migration_runs'][0]['status'] == 'RUNNING' and d['migration_runs'][0]['end_ts'] is None and
[x['status'] for x in d['migration_exec_results']] == ['FAILED'] and d['migration_human_requests'] == [] and
d['attempt_history'][0]['completed_at'] is None and d['attempt_history'][0]['duration_seconds'] is None"
ts7=$(printf '%s\n' "$first" | sed -n 7p | pyj "d['ts']")
out=$(fl state abc-123 --as-of-time "$ts7")
expect_json "state --as-of-time (ts of seq 7): the state after the last event with ts <= T" "$out" \
    "d['as_of_seq'] >= 7 and d['migration_flows'][0]['migration_status'] in ('RUNNING', 'DONE')"
out=$(fl state abc-123 --as-of-time 2000-01-01T00:00:00Z); st=$?
expect_error "state --as-of-time before the flow existed: not_found" not_found "$out" $st
out=$(fl state abc-123 --as-of-time yesterday); st=$?
expect_error "state --as-of-time with a bad time is a usage error" usage "$out" $st

# ---- history: a second attempt ----
{
    ev run_started '{"run_id": "abc-123_run_2", "flow_id": "abc-123", "job_run_id": "982"}'
    ev run_status '{"run_id": "abc-123_run_2", "status": "FAILED", "error_message": "cluster lost"}'
} | fl append --batch >/dev/null
out=$(fl history abc-123)
expect_json "history: two attempts, newest first, count 2" "$out" "
d['flow_id'] == 'abc-123' and d['count'] == 2 and [a['attempt_number'] for a in d['history']] == [2, 1] and
d['history'][0]['attempt_id'] == 'abc-123_run_2' and d['history'][0]['status'] == 'FAILED' and
d['history'][0]['error_message'] == 'cluster lost' and d['history'][0]['duration_seconds'] is not None"
out=$(fl history abc-123 --limit 1)
expect_json "history --limit 1: the newest only" "$out" "[a['attempt_number'] for a in d['history']] == [2]"
out=$(fl history abc-123 --limit 0 && fl history abc-123 --limit 100000000000)
expect_json "history --limit 0 is the default, a limit past 2^32 all attempts" "$out" "[a['attempt_number'] for a in L[0]['history']] == [2, 1] and L[0] == L[1]"
out=$(fl state abc-123)
expect_json "a failed current run makes the flow FAILED; attempts counted" "$out" "
(f := d['migration_flows'][0]) and f['migration_status'] == 'FAILED' and f['total_attempts'] == 2 and
f['successful_conversions'] == 1 and f['current_run_id'] == 'abc-123_run_2'"

# ---- table ----
out=$(fl table migration_runs --where flow_id=abc-123)
expect_json "table migration_runs --where flow_id: both runs, by run_id" "$out" \
    "[r['run_id'] for r in L] == ['abc-123_run_1706543210', 'abc-123_run_2']"
out=$(fl table migration_runs --where status=SUCCESS)
expect_json "table migration_runs --where status=SUCCESS" "$out" "[r['run_id'] for r in L] == ['$RUN']"
out=$(fl table migration_runs --where job_run_id=982)
expect_json "table migration_runs --where job_run_id" "$out" "[r['run_id'] for r in L] == ['abc-123_run_2']"
out=$(fl table migration_iterations --where step=fix_errors)
expect_json "table migration_iterations --where step" "$out" "[(r['iteration_num'], r['step']) for r in L] == [(2, 'fix_errors')]"
out=$(fl table migration_patches --where run_id=$RUN)
expect_json "table migration_patches --where run_id" "$out" "[r['iteration_num'] for r in L] == [1, 2]"
out=$(fl table migration_exec_results --where run_id=$RUN)
expect_json "table migration_exec_results --where run_id" "$out" "[r['status'] for r in L] == ['FAILED', 'SUCCESS']"
out=$(fl table migration_flows --where migration_status=FAILED)
expect_json "table migration_flows --where migration_status" "$out" "[r['flow_id'] for r in L] == ['abc-123']"
out=$(fl table migration_flows --where flow_name=customer_orders.xml)
expect_json "table migration_flows --where flow_name" "$out" "[r['flow_id'] for r in L] == ['abc-123']"
out=$(fl table migration_human_requests --where run_id=nobody)
expect_json "table with no matching rows prints nothing" "${out:-[]}" "L == [] or L == [[]]"

# 1100 more flows: table pages (1000 rows a page) and log pages (~1 MiB a page) are followed.
python3 -c '
import json
for i in range(1100):
    print(json.dumps({"type": "flow_registered", "data": {"flow_id": "bulk-%04d" % i, "flow_name": "bulk.xml",
                      "description": "x" * (2000 if i < 1000 else 0)}}))' >"$WORK/bulk.jsonl"
head -n 1000 "$WORK/bulk.jsonl" | fl append --batch >"$WORK/bulk1.out"
tail -n 100 "$WORK/bulk.jsonl" | fl append --batch >"$WORK/bulk2.out"
out=$(cat "$WORK/bulk1.out" "$WORK/bulk2.out")
expect_json "two batches of 1000 and 100 events" "$out" "len(L) == 1100 and [x['seq'] for x in L] == list(range(16, 1116))"
out=$(fl table migration_flows)
expect_json "table migration_flows follows pages: all 1101 flows, sorted, no repeats" "$out" \
    "len(L) == 1101 and [r['flow_id'] for r in L] == sorted(set(r['flow_id'] for r in L))"
out=$(fl table migration_flows --where flow_name=bulk.xml --limit 5)
expect_json "table --limit 5" "$out" "[r['flow_id'] for r in L] == ['bulk-%04d' % i for i in range(5)]"
out=$(fl table migration_flows --where flow_name=bulk.xml --limit 0)
expect_json "table --limit 0: no limit" "$out" "len(L) == 1100"
out=$(fl log --from 1)
expect_json "log follows pages (2 MiB of events): all 1115 in order" "$out" "[e['seq'] for e in L] == list(range(1, 1116))"
out=$(fl log --from 100 --limit 1000)
expect_json "log --limit across pages" "$out" "[e['seq'] for e in L] == list(range(100, 1100))"

# ---- verify, stats ----
out=$(fl verify)
expect_json "verify: ok, 1115 events, no problems" "$out" \
    "d['ok'] is True and d['events'] == 1115 and d['head_seq'] == 1115 and d['problems'] == [] and len(d['head_hash']) > 0"
out=$(fl stats)
expect_json "stats: an object of counters" "$out" "isinstance(d, dict) and len(d) > 0"

# ---- output for people, help, exit codes ----
ok_human=1
for cmd in "ping" "log --limit 3" "timeline --run $RUN" "state abc-123" "history abc-123" \
    "table migration_runs" "verify" "stats"; do
    # shellcheck disable=SC2086
    if ! o=$("$FLOWLOG" --server "$SRV_ADDR" --data "$DATA" $cmd) || [ -z "$o" ]; then
        ok_human=0
        diag "flowlog $cmd (for people) failed or printed nothing"
    fi
done
check "every read command prints something for people without --json" test $ok_human = 1
o=$("$FLOWLOG" --server "$SRV_ADDR" --data "$DATA" state abc-123)
check "state for people shows the tables" grep -q "migration_exec_results" <<<"$o"

help_ok=1
"$FLOWLOG" --help | grep -q "Exit codes" || help_ok=0
for c in append log timeline state history table rollback verify stats ping; do
    "$FLOWLOG" "$c" --help | grep -q "usage: flowlog" || { help_ok=0; diag "no help for $c"; }
done
check "flowlog --help documents exit codes; every command has --help" test $help_ok = 1

out=$("$FLOWLOG" --json frobnicate); st=$?
expect_error "an unknown command is a usage error" usage "$out" $st
out=$(fl log --limit zero); st=$?
expect_error "a bad option value is a usage error" usage "$out" $st
out=$(printf '{"type": "flow_registered", "data": \n' | fl append --batch); st=$?
check "bad JSON on stdin: exit 2, nothing sent" test $st -eq 2
expect_json "bad JSON on stdin: bad_request naming the line" "$out" "d['error']['code'] == 'bad_request' and d['error']['index'] == 0"
out=$("$FLOWLOG" --json --server 127.0.0.1:1 --token x ping); st=$?
check "connection refused exits with 3" test $st -eq 3
expect_json "connection refused: code connection" "$out" "d['error']['code'] == 'connection'"
out=$(FLOWLOG_SERVER=$SRV_ADDR FLOWLOG_TOKEN=$(head -n 1 "$DATA/admin.token") "$FLOWLOG" --json ping)
expect_json "FLOWLOG_SERVER and FLOWLOG_TOKEN are honoured" "$out" "d['ok'] is True"
out=$("$FLOWLOG" --json --server "unix:$WORK/main.sock" --data "$DATA" log --limit 1)
expect_json "the same server through its Unix socket (--server unix:PATH)" "$out" "L[0]['seq'] == 1"

# Data comes back as it was appended: its keys in their order, a null kept (CONTRACT.md 6); a
# retry with another order and without the null is still a duplicate.
odd='{"type": "flow_updated", "event_id": "cli-odd", "data": {"owner": "o2", "server": null, "flow_id": "abc-123"}}'
seq=$(fl append <<<"$odd" | pyj "d['seq']")
out=$(fl log --from "$seq" --limit 1)
expect_json "log: data with its keys in the appended order and its null" "$out" \
    "list(L[0]['data'].items()) == [('owner', 'o2'), ('server', None), ('flow_id', 'abc-123')]"
out=$(fl append <<<'{"type": "flow_updated", "event_id": "cli-odd", "data": {"flow_id": "abc-123", "owner": "o2"}}')
expect_json "the same event in another order, without the null: a duplicate" "$out" \
    "d['duplicate'] is True and d['seq'] == $seq"
# A NUL character is valid JSON and UTF-8: the CLI sends it and prints it back escaped.
seq=$(fl append <<<'{"type": "flow_updated", "data": {"flow_id": "abc-123", "description": "a\u0000b"}}' | pyj "d['seq']")
out=$(fl log --from "$seq" --limit 1)
expect_json "a NUL inside a string is appended and read back" "$out" "L[0]['data']['description'] == 'a\x00b'"
# For people too: an id holding a NUL is printed whole, the NUL as \u0000 (a C string would end
# at it and show another id).
seq=$(fl append <<<'{"type": "flow_registered", "data": {"flow_id": "nul\u0000id", "flow_name": "n"}}' | pyj "d['seq']")
o=$("$FLOWLOG" --server "$SRV_ADDR" --data "$DATA" log --from "$seq" --limit 1)
t=$("$FLOWLOG" --server "$SRV_ADDR" --data "$DATA" table migration_flows --where flow_name=n)
both_show_nul_id() { grep -qF 'nul\u0000id' <<<"$1" && grep -qF 'nul\u0000id' <<<"$2"; }
check "log and table for people show an id with a NUL whole (nul\\u0000id)" both_show_nul_id "$o" "$t"
# An error message quoting bytes that are not UTF-8 is still UTF-8 (each stray byte a '?'), so
# that clients can decode it: here a flow_id given on the command line.
out=$(fl state $'f\xff\xfe'); st=$?
expect_error "an unknown flow whose id is not UTF-8" not_found "$out" $st
expect_json "... the message shows its stray bytes as '?'" "$out" "'\"f??\"' in d['error']['message']"
out=$(fl rollback abc-123 --to-seq -1 --reason x); st=$?
expect_error "a bad option value names the option" usage "$out" $st
expect_json "... --to-seq" "$out" "'--to-seq' in d['error']['message']"
