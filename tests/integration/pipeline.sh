#!/usr/bin/env bash
# pipeline.sh: many requests in flight on one connection, every answer matched by id: the
# libflowlog program tests/integration/pipeline (20000 appends and pings without waiting), then
# the CLI's pipelined append (its results in input order, equal to the log).
. "$top_srcdir/tests/integration/lib.sh"

plan 11
start_server main || exit 1
DATA=$WORK/main/data
PIPELINE=$top_builddir/tests/integration/pipeline

tap_from "$PIPELINE" "$SRV_ADDR" "$(head -n 1 "$DATA/admin.token")" 20000
head=$(fl stats | pyj "d['head_seq']")

python3 -c '
import json
for i in range(5000):
    print(json.dumps({"type": "flow_registered", "event_id": "cli-%d" % i,
                      "data": {"flow_id": "cli-%d" % i, "flow_name": "cli.xml"}}))' >"$WORK/in"
fl append <"$WORK/in" >"$WORK/out"
check "CLI: 5000 pipelined appends, exit 0" test $? -eq 0
fl log --from $((head + 1)) >"$WORK/log"
python3 - "$WORK/in" "$WORK/out" "$WORK/log" <<'PY'
import json, sys
ins, outs, log = ([json.loads(l) for l in open(p) if l.strip()] for p in sys.argv[1:4])
by_seq = {e["seq"]: e["event_id"] for e in log}
ok = len(outs) == len(ins) == len(log) and all(by_seq.get(o.get("seq")) == i["event_id"] for i, o in zip(ins, outs))
sys.exit(0 if ok else 1)
PY
check "CLI: the i-th result line is the i-th input line's event (checked against the log)" test $? -eq 0
out=$(fl verify)
expect_json "verify passes" "$out" "d['ok'] is True"
