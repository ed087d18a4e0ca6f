#!/usr/bin/env bash
# backup.sh: an admin's backup is a consistent copy of the store that flowlogd serves as it is;
# writers and readers may not take one; names cannot escape the backups directory.
. "$top_srcdir/tests/integration/lib.sh"
plan 9

cat >"$WORK/tokens" <<T
adm-token acme admin
wr-token acme writer
rd-token acme reader
T
chmod 600 "$WORK/tokens"
start_server a --tokens "$WORK/tokens" || exit 1
DATA=$WORK/a/data
TOKEN=adm-token
printf '%s\n' '{"type":"flow_registered","data":{"flow_id":"f1","flow_name":"n"}}' \
    '{"type":"run_started","data":{"run_id":"r1","flow_id":"f1"}}' | fl append >/dev/null

out=$(fl backup nightly)
expect_json "an admin's backup: name, path under the data directory, head seq 2" "$out" \
    "d['name'] == 'nightly' and d['path'] == '$DATA/backups/nightly' and d['head_seq'] == 2 and d['bytes'] > 0"
out=$(fl backup nightly); st=$?
expect_error "the same name twice" already_exists "$out" $st
out=$(fl backup ../escape); st=$?
expect_error "a name with a path in it" bad_request "$out" $st
out=$(TOKEN=wr-token fl backup w); st=$?
expect_error "a writer cannot take a backup" forbidden "$out" $st
out=$(TOKEN=rd-token fl backup r); st=$?
expect_error "a reader cannot take a backup" forbidden "$out" $st

# appended after the copy: not in it
echo '{"type":"run_status","data":{"run_id":"r1","status":"SUCCESS"}}' | fl append >/dev/null
want=$(fl state f1 --as-of-seq 2)
# serve the copy with a second flowlogd, as an operator would after a disaster
"$FLOWLOGD" --data "$DATA/backups/nightly" --listen 127.0.0.1:0 --port-file "$WORK/b.port" \
    --tokens "$WORK/tokens" --sync none >"$WORK/b.log" 2>&1 &
SRV_PIDS+=($!)
if wait_until 30 test -s "$WORK/b.port"; then
    ok "flowlogd serves the backup directory"
else
    not_ok "flowlogd serves the backup directory"
    diag "$(cat "$WORK/b.log")"
    exit 1
fi
SRV_ADDR=127.0.0.1:$(cat "$WORK/b.port")
out=$(fl log --from 1)
expect_json "the copy holds seq 1..2, not what came after" "$out" "[e['seq'] for e in L] == [1, 2]"
got=$(fl state f1)
check "the copy's state equals the original's state as of seq 2" test "$got" = "$want"
out=$(fl verify)
expect_json "verify passes on the copy" "$out" "d['ok'] is True"
