#!/usr/bin/env bash
# follow.sh: subscriptions (log --follow) with live appends: history first, then every new
# matching event in order, no gaps, no duplicates; filters; several subscribers; a subscriber
# that stops reading does not block writers and catches up afterwards.
. "$top_srcdir/tests/integration/lib.sh"

plan 8
start_server main || exit 1
DATA=$WORK/main/data

# follow ARGS...: a subscriber in the background (killed after 120 s at most); sets FOLLOWER.
follow() {
    timeout 120 "$FLOWLOG" --server "$SRV_ADDR" --data "$DATA" --json log --follow "$@" &
    FOLLOWER=$!
}

# events N PREFIX [SIZE]: N flow registrations (flow ids PREFIX-0..) with SIZE-byte (400)
# descriptions, one JSON line each.
events() {
    python3 -c '
import json, sys
n, p, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    print(json.dumps({"type": "flow_registered", "data": {"flow_id": "%s-%d" % (p, i), "flow_name": "f.xml",
                      "description": "d" * size}}))' "$1" "$2" "${3:-400}"
}

events 5 old | fl append --batch >/dev/null

follow --limit 306 >"$WORK/all.out"
f_all=$FOLLOWER
follow --limit 100 --type run_started >"$WORK/runs.out"
f_runs=$FOLLOWER
follow --limit 3 --flow live-7 --from 3 >"$WORK/flow.out"
f_flow=$FOLLOWER

# Live appends from three concurrent clients: 100 single appends, 100 in batches, then runs.
events 100 live | fl append >"$WORK/w1" &
w1=$!
events 100 batch >"$WORK/batch.jsonl"
for i in 0 1 2 3 4 5 6 7 8 9; do
    sed -n "$((i * 10 + 1)),$((i * 10 + 10))p" "$WORK/batch.jsonl" | fl append --batch >>"$WORK/w2"
done
wait $w1
python3 -c '
import json
for i in range(100):
    print(json.dumps({"type": "run_started", "data": {"run_id": "run-%d" % i, "flow_id": "live-%d" % i}}))' |
    fl append >"$WORK/w3"
printf '%s\n' '{"type": "flow_status", "data": {"flow_id": "live-7", "migration_status": "STOPPED"}}' | fl append >>"$WORK/w3"

acked=$(cat "$WORK/w1" "$WORK/w2" "$WORK/w3" | pyj "sorted(x['seq'] for x in L)")
wait $f_all
st_all=$?
wait $f_runs
st_runs=$?
wait $f_flow
st_flow=$?
check "the subscribers ended after their --limit" test $st_all = 0 -a $st_runs = 0 -a $st_flow = 0

out=$(cat "$WORK/all.out")
expect_json "log --follow from 1: history then live, seq 1..306, no gap, no duplicate" "$out" \
    "[e['seq'] for e in L] == list(range(1, 307))"
expect_json "... every acknowledged seq was delivered" "$out
$acked" "set(L[-1]) <= set(e['seq'] for e in L[:-1])"
out=$(cat "$WORK/runs.out")
expect_json "log --follow --type run_started: the 100 runs only, in order" "$out" \
    "len(L) == 100 and all(e['type'] == 'run_started' for e in L) and [e['seq'] for e in L] == sorted(e['seq'] for e in L)"
out=$(cat "$WORK/flow.out")
expect_json "log --follow --flow live-7: its registration, its run, its status" "$out" \
    "[e['type'] for e in L] == ['flow_registered', 'run_started', 'flow_status'] and all(e['data']['flow_id'] == 'live-7' for e in L)"

# A subscriber that stops reading: its pipe fills, then its socket buffers, then the server's
# output buffer; 10 MB is more than loopback socket buffers hold, so the server must fall back.
head=$(fl stats | pyj "d['head_seq']")
mkfifo "$WORK/gate"
timeout 120 "$FLOWLOG" --server "$SRV_ADDR" --data "$DATA" --json log --follow --from $((head + 1)) --limit 5000 |
    { read -r _ <"$WORK/gate"; cat >"$WORK/slow.out"; } &
slow=$!
start=$SECONDS
events 5000 slow 2000 | timeout 90 "$FLOWLOG" --server "$SRV_ADDR" --data "$DATA" --json append >"$WORK/slow-acks"
st=$?
check "5000 appends (10 MB) complete while a subscriber reads nothing" test $st = 0
expect_json "... all acknowledged" "$(cat "$WORK/slow-acks")" "len(L) == 5000 and not any('error' in x for x in L)"
echo go >"$WORK/gate"
wait $slow
out=$(cat "$WORK/slow.out")
expect_json "the stalled subscriber catches up: all 5000, in order, no gap" "$out" \
    "[e['seq'] for e in L] == list(range($head + 1, $head + 5001))"
diag "writers finished $((SECONDS - start)) s after the subscriber stalled"
