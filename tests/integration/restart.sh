#!/usr/bin/env bash
# restart.sh: durability across restarts, through the CLI.
#  1. SIGTERM: flowlogd exits 0; started again on the same directory, everything acknowledged is
#     there (log, state, verify) and seqs continue without reuse.
#  2. SIGTERM while several clients have appends in flight: every acknowledged event survives.
#  3. SIGKILL during concurrent appends from several CLI clients (--sync full): after a restart
#     every acknowledged seq holds its event, the log has no gap, verify passes, and retrying
#     every event answers the acknowledged ones as duplicates with their original seq.
. "$top_srcdir/tests/integration/lib.sh"

plan 17
DATA=$WORK/main/data
start_server main || exit 1

# ---- 1. SIGTERM, restart ----
fl append --batch <"$top_srcdir/tools/demo-data.jsonl" >/dev/null
fl log >"$WORK/log.1"
fl state abc-123 >"$WORK/state.1"
stop_server "$SRV_PID" TERM
check "SIGTERM: flowlogd exits with status 0" test $? -eq 0
start_server main || exit 1
fl log >"$WORK/log.2"
fl state abc-123 >"$WORK/state.2"
check "after a restart the log is identical" cmp -s "$WORK/log.1" "$WORK/log.2"
check "after a restart the state is identical" cmp -s "$WORK/state.1" "$WORK/state.2"
out=$(printf '%s\n' '{"type": "flow_registered", "data": {"flow_id": "after-restart", "flow_name": "x"}}' | fl append)
expect_json "seqs continue after the restart (14)" "$out" "d['seq'] == 14"
out=$(fl verify)
expect_json "verify passes after the restart" "$out" "d['ok'] is True and d['events'] == 14"

# events N PREFIX: N registrations with unique event_ids PREFIX-i.
events() {
    python3 -c '
import json, sys
n, p = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    print(json.dumps({"type": "flow_registered", "event_id": "%s-%d" % (p, i),
                      "data": {"flow_id": "%s-%d" % (p, i), "flow_name": "f.xml", "description": "d" * 200}}))' "$1" "$2"
}

# acked OUT IN: pair each acknowledgement in OUT with its input line in IN, as "seq event_id".
# (Without --batch the CLI prints one line per input line, in order, until the connection breaks.)
acked() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
outs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ins = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
for o, i in zip(outs, ins):
    if "seq" in o:
        print(o["seq"], i["event_id"])
EOF
}

# check_acked NAME: every acknowledged (seq, event_id) of writers NAME.* is in the log; no gap.
check_acked() {
    local name=$1 f
    : >"$WORK/$name.acked"
    for f in "$WORK/$name".in.*; do
        acked "${f/.in./.out.}" "$f" >>"$WORK/$name.acked"
    done
    fl log >"$WORK/$name.log"
    python3 - "$WORK/$name.acked" "$WORK/$name.log" <<'EOF'
import json, sys
acked = [l.split() for l in open(sys.argv[1]) if l.strip()]
log = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
by_seq = {e["seq"]: e["event_id"] for e in log}
missing = [(s, i) for s, i in acked if by_seq.get(int(s)) != i]
seqs = [e["seq"] for e in log]
print("# %d acknowledged, %d in the log, %d missing" % (len(acked), len(log), len(missing)))
sys.exit(0 if not missing and seqs == list(range(1, len(seqs) + 1)) else 1)
EOF
}

# writers NAME N PREFIX COUNT: start COUNT CLI writers of N events each in the background.
WRITERS=()
writers() {
    local name=$1 n=$2 prefix=$3 count=$4 i
    WRITERS=()
    for i in $(seq 1 "$count"); do
        events "$n" "$prefix$i" >"$WORK/$name.in.$i"
    done
    for i in $(seq 1 "$count"); do
        "$FLOWLOG" --server "$SRV_ADDR" --data "$DATA" --json append <"$WORK/$name.in.$i" \
            >"$WORK/$name.out.$i" 2>/dev/null &
        WRITERS+=($!)
    done
}

# acks NAME: how many acknowledgements writers NAME have printed so far.
acks() { cat "$WORK/$1".out.* 2>/dev/null | grep -c '"seq"'; }
# acks_at_least NAME N: for wait_until (re-evaluated at every poll).
acks_at_least() { [ "$(acks "$1")" -ge "$2" ]; }

# ---- 2. SIGTERM with appends in flight ----
writers term 3000 t 4
wait_until 60 acks_at_least term 500
stop_server "$SRV_PID" TERM
check "SIGTERM with four writers mid-stream: exit status 0" test $? -eq 0
for w in "${WRITERS[@]}"; do wait "$w"; done
diag "$(acks term) of 12000 acknowledged before the stop"
start_server main || exit 1
check "every event acknowledged before SIGTERM is there, no gap" check_acked term
n_log=$(grep -c '"seq"' "$WORK/term.log")
check "SIGTERM finished what it received: every committed event was acknowledged ($n_log = $(acks term) + 14)" \
    test "$n_log" -eq $(($(acks term) + 14))

# ---- 3. SIGKILL during concurrent appends, --sync full ----
stop_server "$SRV_PID" TERM
SYNC=full start_server main || exit 1
for b in 1 2; do events 1000 "kb$b" | split -l 50 - "$WORK/kill-batch$b."; done
writers kill 3000 k 4
# and two writers of 50-event batches
for b in 1 2; do
    (for f in "$WORK/kill-batch$b".*; do
        "$FLOWLOG" --server "$SRV_ADDR" --data "$DATA" --json append --batch <"$f" 2>/dev/null || break
    done >"$WORK/killb.out.$b") &
    WRITERS+=($!)
done
wait_until 60 acks_at_least kill 1000
stop_server "$SRV_PID" KILL
diag "SIGKILL with $(acks kill) acknowledgements printed"
for w in "${WRITERS[@]}"; do wait "$w"; done
total_acked=$(acks kill)
check "the writers saw acknowledgements before the kill ($total_acked) but not all 12000" \
    test "$total_acked" -gt 0 -a "$total_acked" -lt 12000
start_server main || exit 1
check "after SIGKILL every acknowledged seq holds its event; the log has no gap" check_acked kill
batch_ok=1
for b in 1 2; do
    # every batch acknowledged (50 lines) is in the log with the same seqs
    python3 - "$WORK/killb.out.$b" "$WORK/kill.log" <<'EOF' || batch_ok=0
import json, sys
acks = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
log = {e["seq"] for e in (json.loads(l) for l in open(sys.argv[2]) if l.strip())}
good = [a["seq"] for a in acks if "seq" in a]
sys.exit(0 if len(good) % 50 == 0 and all(s in log for s in good) else 1)
EOF
done
check "every acknowledged batch is there, whole" test $batch_ok = 1
out=$(fl verify)
expect_json "verify passes after SIGKILL (checksums, chain, projections)" "$out" "d['ok'] is True and d['problems'] == []"

# Retry everything: acknowledged events come back as duplicates with their seq.
retry_ok=1
for f in "$WORK"/kill.in.*; do
    fl append <"$f" >"${f/.in./.retry.}" || retry_ok=0
done
check "retrying every event after the restart succeeds" test $retry_ok = 1
python3 - "$WORK"/kill.in.* <<'EOF'
import json, sys
bad = 0
for inp in sys.argv[1:]:
    out, retry = inp.replace(".in.", ".out."), inp.replace(".in.", ".retry.")
    first = [json.loads(l) for l in open(out) if l.strip()]
    again = [json.loads(l) for l in open(retry) if l.strip()]
    for a, b in zip(first, again):
        if "seq" not in a:
            continue
        if not (b.get("duplicate") is True and b.get("seq") == a["seq"]):
            bad += 1
sys.exit(1 if bad else 0)
EOF
check "... and every acknowledged one is a duplicate with its original seq" test $? -eq 0
out=$(fl log | pyj "[len(L), len(set(e['event_id'] for e in L)), L[-1]['seq']]")
expect_json "no event appended twice: one log entry per event_id" "$out" "d[0] == d[1] == d[2]"
out=$(fl verify)
expect_json "verify passes at the end" "$out" "d['ok'] is True"
stop_server "$SRV_PID" TERM
check "the final SIGTERM exits 0" test $? -eq 0
