#!/usr/bin/env bash
# hostile.sh: raw hostile bytes at flowlogd (tests/integration/hostile: truncated frame, 4 GiB
# length, a map declaring 2^32 entries, 100-deep nesting, garbage, unknown op, request before
# hello, wrong token, ...): each gets a clear error or the connection closed, while another
# client's appends keep working, including a CLI writer running the whole time.
. "$top_srcdir/tests/integration/lib.sh"

plan 34
start_server main || exit 1
DATA=$WORK/main/data
HOSTILE=$top_builddir/tests/integration/hostile

python3 -c '
import json
for i in range(3000):
    print(json.dumps({"type": "flow_registered", "data": {"flow_id": "bg-%d" % i, "flow_name": "bg.xml"}}))' |
    fl append >"$WORK/bg.out" &
bg=$!
tap_from "$HOSTILE" 127.0.0.1 "${SRV_ADDR##*:}" "$(head -n 1 "$DATA/admin.token")"
wait $bg
check "a CLI writer running throughout exits 0" test $? -eq 0
expect_json "... with all 3000 appends acknowledged" "$(cat "$WORK/bg.out")" \
    "len(L) == 3000 and all('seq' in x for x in L)"
check "flowlogd is still running" kill -0 "$SRV_PID"
