#!/usr/bin/env bash
# access.sh: tokens, tenants and roles. Two tenants never see each other's data (log, state,
# tables, history, idempotency keys, subscriptions); a reader cannot append; a writer cannot roll
# back or verify; an operator acts for a tenant only when it names one, and only an operator may
# rebuild the projections.
. "$top_srcdir/tests/integration/lib.sh"

plan 41
umask 077
cat >"$WORK/tokens" <<'EOF'
# TOKEN               TENANT     ROLE
acme-admin-0123456789 acme:eng   admin
acme-writer-012345678 acme:eng   writer
acme-reader-012345678 acme:eng   reader
beta-admin-0123456789 beta       admin
operator-012345678901 *          admin
EOF
start_server main --tokens "$WORK/tokens" || exit 1
AA=acme-admin-0123456789 AW=acme-writer-012345678 AR=acme-reader-012345678
BA=beta-admin-0123456789 OP=operator-012345678901

as() { # as TOKEN CLI-ARGS...: the CLI with that token
    local t=$1
    shift
    TOKEN=$t fl "$@"
}

out=$(as $AW ping)
expect_json "a writer's handshake names its tenant and role" "$out" "d['tenant'] == 'acme:eng' and d['role'] == 'writer'"
out=$(as $AR ping)
expect_json "a reader's handshake" "$out" "d['role'] == 'reader'"

# The same ids and the same event_id in two tenants are two different things.
acme=$(printf '%s\n' '{"type": "flow_registered", "event_id": "reg-1", "data": {"flow_id": "shared", "flow_name": "acme.xml"}}' |
    as $AW append)
beta=$(printf '%s\n' '{"type": "flow_registered", "event_id": "reg-1", "data": {"flow_id": "shared", "flow_name": "beta.xml"}}' |
    as $BA append)
expect_json "one flow_id and one event_id registered in both tenants: two events, no duplicate" \
    "$acme
$beta" "L[0]['duplicate'] is False and L[1]['duplicate'] is False and L[0]['seq'] != L[1]['seq']"
printf '%s\n' '{"type": "flow_registered", "data": {"flow_id": "acme-only", "flow_name": "secret.xml"}}' | as $AW append >/dev/null
printf '%s\n' '{"type": "run_started", "data": {"run_id": "acme-run", "flow_id": "acme-only"}}' | as $AW append >/dev/null

out=$(as $AR log)
expect_json "acme's log holds acme's events only" "$out" \
    "len(L) == 3 and all(e['data'].get('flow_name') != 'beta.xml' for e in L)"
out=$(as $BA log)
expect_json "beta's log holds beta's event only" "$out" "len(L) == 1 and L[0]['data']['flow_name'] == 'beta.xml'"
out=$(as $BA state shared)
expect_json "state of the shared id in beta is beta's flow" "$out" "d['migration_flows'][0]['flow_name'] == 'beta.xml' and d['version'] == 1"
out=$(as $AR state shared)
expect_json "... and in acme, acme's" "$out" "d['migration_flows'][0]['flow_name'] == 'acme.xml'"
out=$(as $BA state acme-only); st=$?
expect_error "beta cannot see acme's flow" not_found "$out" $st
out=$(as $BA table migration_flows)
expect_json "beta's tables hold beta's rows only" "$out" "[r['flow_id'] for r in L] == ['shared']"
out=$(as $BA table migration_runs --where flow_id=acme-only)
expect_json "beta's filtered table read finds none of acme's runs" "${out:-[]}" "L in ([], [[]])"
out=$(as $BA history acme-only); st=$?
check "beta gets no history of acme's flow" test $st -ne 0
out=$(as $BA timeline --run acme-run)
expect_json "beta's timeline of acme's run is empty" "${out:-[]}" "L in ([], [[]])"
out=$(as $BA log --flow acme-only)
expect_json "beta's log filtered on acme's flow is empty" "${out:-[]}" "L in ([], [[]])"
out=$(printf '%s\n' '{"type": "run_started", "data": {"run_id": "beta-run", "flow_id": "acme-only"}}' | as $BA append); st=$?
expect_error "beta cannot start a run on acme's flow" not_found "$out" $st

# A subscriber of one tenant sees none of the other's live events.
head=$(as $BA stats | pyj "d['head_seq']")
as $BA log --follow --from $((head + 1)) --limit 1 >"$WORK/beta-follow" 2>&1 &
follower=$!
printf '%s\n' '{"type": "flow_status", "data": {"flow_id": "acme-only", "migration_status": "STOPPED"}}' | as $AW append >/dev/null
printf '%s\n' '{"type": "flow_status", "data": {"flow_id": "shared", "migration_status": "STOPPED"}}' | as $BA append >/dev/null
wait_until 10 sh -c "! kill -0 $follower 2>/dev/null"
wait $follower 2>/dev/null
out=$(cat "$WORK/beta-follow")
expect_json "beta's subscriber gets beta's events, never acme's" "$out" \
    "all(e['data']['flow_id'] == 'shared' for e in L) and len(L) == 1"

# ---- roles ----
out=$(printf '%s\n' '{"type": "flow_registered", "data": {"flow_id": "r", "flow_name": "r"}}' | as $AR append); st=$?
expect_error "a reader cannot append" forbidden "$out" $st
out=$(as $AR rollback shared --to-seq 1 --reason x); st=$?
expect_error "a reader cannot roll back" forbidden "$out" $st
out=$(as $AR state acme-only)
expect_json "a reader can read" "$out" "d['flow_id'] == 'acme-only'"
reg=$(as $AR log --flow shared | pyj "L[0]['seq']")
out=$(as $AW rollback shared --to-seq "$reg" --reason x); st=$?
expect_error "a writer cannot roll back" forbidden "$out" $st
out=$(as $AW append --batch <<EOF
{"type": "flow_status", "data": {"flow_id": "shared", "migration_status": "RUNNING"}}
{"type": "flow_rollback", "data": {"flow_id": "shared", "to_seq": $reg, "reason": "x"}}
EOF
); st=$?
expect_error "... not even inside a batch" forbidden "$out" $st
expect_json "... whose error names the rollback's index" "$out" "d['error']['index'] == 1"
out=$(as $AW verify); st=$?
expect_error "a writer cannot verify" forbidden "$out" $st
out=$(as $AW stats); st=$?
expect_error "a writer cannot read stats" forbidden "$out" $st
out=$(as $AA rollback shared --to-seq "$reg" --reason "admin may")
expect_json "an admin can roll back" "$out" "d['duplicate'] is False"
out=$(as $AA verify)
expect_json "an admin can verify" "$out" "d['ok'] is True"

# ---- operator ----
out=$(as $OP ping)
expect_json "an operator without a tenant may ping" "$out" "d['ok'] is True and d['tenant'] is None"
out=$(as $OP verify)
expect_json "... and verify the whole store" "$out" "d['ok'] is True"
out=$(as $AA rebuild); st=$?
expect_error "a tenant's admin may not rebuild (it rewrites every tenant's projections)" forbidden "$out" $st
out=$(as $AW rebuild); st=$?
expect_error "nor may a writer" forbidden "$out" $st
before_a=$(as $AR state shared) before_b=$(as $BA state shared)
head=$(as $OP stats | pyj "d['head_seq']")
out=$(as $OP rebuild)
expect_json "an operator rebuilds every projection: every event replayed" "$out" \
    "d['events'] == $head and d['head_seq'] == $head and d['micros'] >= 0"
check "... and the states read the same after it" test "$(as $AR state shared)$(as $BA state shared)" = "$before_a$before_b"
out=$(as $OP verify)
expect_json "... and verify passes after it" "$out" "d['ok'] is True"
# A rebuild while a writer appends: the appends wait for it and are all acknowledged.
python3 -c 'import json, sys
for i in range(3000):
    print(json.dumps({"type": "flow_registered", "data": {"flow_id": f"busy-{i}", "flow_name": "busy.xml"}}))' >"$WORK/busy.jsonl"
( as $AW append <"$WORK/busy.jsonl" >"$WORK/busy.out"; echo $? >"$WORK/busy.rc" ) &
bpid=$!
wait_until 20 test -s "$WORK/busy.out" || diag "the writer did not start"
out=$(as $OP rebuild)
wait $bpid
expect_json "a rebuild while a writer appends" "$out" "d['events'] == d['head_seq'] and d['head_seq'] > $head"
check "... whose 3000 appends are all acknowledged" sh -c "test \"\$(cat '$WORK/busy.rc')\" -eq 0 && test \$(grep -c . '$WORK/busy.out') -eq 3000"
out=$(as $OP verify)
expect_json "... and verify passes after both" "$out" "d['ok'] is True and d['head_seq'] == $head + 3000"
out=$(as $OP log); st=$?
expect_error "... but not read a tenant's log" forbidden "$out" $st
out=$(as $OP --tenant beta log)
expect_json "an operator naming beta reads beta's log" "$out" "len(L) >= 1 and all(e['data']['flow_id'] == 'shared' for e in L)"
out=$(as $AW --tenant beta ping); st=$?
expect_error "a non-operator token may not name a tenant" forbidden "$out" $st
check "... and the CLI exits 3: the handshake refused it" test $st -eq 3
out=$(as $OP --tenant 'bad tenant!' ping); st=$?
expect_error "an invalid tenant name" bad_request "$out" $st
out=$(as not-a-token ping); st=$?
expect_error "an unknown token" unauthenticated "$out" $st
