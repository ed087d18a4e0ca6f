#!/usr/bin/env bash
# disk-full.sh: flowlogd on a small tmpfs that fills up (--sync full). Appends must fail with
# `unavailable` and a message naming the full disk, without crashing the server or closing other
# clients; every acknowledged event stays readable and nothing unacknowledged appears; reads and
# verify keep answering; once space is freed (a filler file deleted, later the tmpfs grown),
# appends succeed again without a restart and verify passes. A data directory on a read-only
# file system is refused at start with a clear message and a non-zero exit status.
#
# Needs root (mount); prints "1..0 # SKIP" where tmpfs cannot be mounted.
. "$top_srcdir/tests/integration/lib.sh"

MOUNTS=()
FOLLOWER=

# mount_tmpfs DIR SIZE: a fresh tmpfs of SIZE on DIR, unmounted when the test exits.
mount_tmpfs() {
    mkdir -p "$1" && mount -t tmpfs -o "size=$2,mode=0700" flowlog-test "$1" 2>/dev/null &&
        MOUNTS+=("$1")
}

# Stop the servers and the follower before unmounting, then lib.sh's clean-up.
disk_cleanup() {
    local p m
    [ -n "$FOLLOWER" ] && kill "$FOLLOWER" 2>/dev/null
    for p in ${SRV_PIDS[@]+"${SRV_PIDS[@]}"}; do
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    SRV_PIDS=()
    for m in ${MOUNTS[@]+"${MOUNTS[@]}"}; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done
    cleanup
}
trap disk_cleanup EXIT

DISK=$WORK/disk
if [ "$(id -u)" -ne 0 ] || ! mount_tmpfs "$DISK" 4m; then
    echo "1..0 # SKIP cannot mount tmpfs (needs root)"
    exit 0
fi

plan 26
export SYNC=full

# A 1 MiB filler on the same tmpfs: deleting it later is how the operator frees space.
dd if=/dev/zero of="$DISK/filler" bs=64k count=16 2>/dev/null
mkdir -p "$DISK/data" "$WORK/full"
ln -s "$DISK/data" "$WORK/full/data"
start_server full || exit 1
DATA=$WORK/full/data
SRV=$SRV_PID

# events PREFIX N [SIZE]: N flow registrations with event_id PREFIX-i and SIZE-byte (16 KiB)
# descriptions, one JSON line each.
events() {
    python3 -c '
import json, sys
p, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    print(json.dumps({"type": "flow_registered", "event_id": "%s-%d" % (p, i),
                      "data": {"flow_id": "%s-%d" % (p, i), "flow_name": "f.xml",
                               "description": "d" * size}}))' "$1" "$2" "${3:-16384}"
}

# fill PREFIX: append 400 large events one by one (pipelined) into $WORK/PREFIX.out, one
# result line per event, until the disk is long full.
fill() { events "$1" 400 | fl append >"$WORK/$1.out" 2>"$WORK/$1.err"; }

# acked PREFIX: the event ids acknowledged in round PREFIX (result line i is event i).
acked() {
    pyj "' '.join('$1-%d' % i for i, x in enumerate(L) if 'seq' in x)" <"$WORK/$1.out"
}

# logged PREFIX: the event ids of round PREFIX found in the log.
logged() {
    fl log | pyj "' '.join(x['event_id'] for x in L if (x['event_id'] or '').startswith('$1-'))"
}

# same_set A B: the two space-separated lists hold the same words.
same_set() { [ "$(printf '%s\n' $1 | sort)" = "$(printf '%s\n' $2 | sort)" ]; }

# A subscriber on its own connection all along: a full disk must not close it.
timeout 300 "$FLOWLOG" --server "$SRV_ADDR" --data "$DATA" --json log --follow >"$WORK/follow.out" &
FOLLOWER=$!

# ---- round 1: fill the disk ----
fill r1
out=$(cat "$WORK/r1.out")
n_ok=$(printf '%s\n' "$out" | pyj "sum(1 for x in L if 'seq' in x)")
n_err=$(printf '%s\n' "$out" | pyj "sum(1 for x in L if 'error' in x)")
diag "round 1: $n_ok appends acknowledged, $n_err refused"
check "appends were acknowledged before the disk filled" test "$n_ok" -gt 0
check "appends failed once the disk was full" test "$n_err" -gt 0
expect_json "every refused append failed with unavailable" "$out" \
    "all(x['error']['code'] == 'unavailable' for x in L if 'error' in x)"
expect_json "the message says the disk is full and what to do" "$out" \
    "all('full' in x['error']['message'] and 'free space' in x['error']['message'] for x in L if 'error' in x)"
check "the server is still running" kill -0 "$SRV"
check "the subscriber's connection is still open" kill -0 "$FOLLOWER"

r1=$(acked r1)
check "reads work on the full disk: every acknowledged event is in the log, nothing else" \
    same_set "$r1" "$(logged r1)"
out=$(fl state r1-0)
expect_json "state works on the full disk" "$out" "d['migration_flows'][0]['flow_id'] == 'r1-0'"
out=$(fl verify 2>&1)
expect_json "verify on the full disk answers (a report or unavailable)" "$out" \
    "'ok' in d or d['error']['code'] == 'unavailable'"
check "the server survived verify on the full disk" kill -0 "$SRV"

# ---- free space: delete the filler ----
rm -f "$DISK/filler"
head=$(fl log | pyj "L[-1]['seq']")
out=$(events after1 3 100 | fl append)
expect_json "after deleting a file, appends succeed again without a restart" "$out" \
    "len(L) == 3 and all('seq' in x for x in L)"
expect_json "their seqs follow the last acknowledged one: no gap" "$out" \
    "[x['seq'] for x in L] == [$head + 1, $head + 2, $head + 3]"
check "the subscriber received the new events" \
    wait_until 20 grep -q '"after1-2"' "$WORK/follow.out"
# verify rebuilds the projections in a scratch store in the data directory: with 1 MiB free it
# may not fit, and then it must say so.
out=$(fl verify 2>&1)
expect_json "verify with little space: a clean report, or unavailable naming the full disk" "$out" \
    "d.get('ok') is True or (d['error']['code'] == 'unavailable' and 'full' in d['error']['message'])"

# ---- round 2: fill again, then grow the file system ----
fill r2
out=$(cat "$WORK/r2.out")
expect_json "the disk fills again: appends fail with unavailable" "$out" \
    "any('error' in x for x in L) and all(x['error']['code'] == 'unavailable' for x in L if 'error' in x)"
r2=$(acked r2)
check "every event acknowledged in round 2 is in the log, nothing else" same_set "$r2" "$(logged r2)"
mount -o remount,size=16m "$DISK"
out=$(events after2 3 100 | fl append)
expect_json "after growing the file system, appends succeed again" "$out" \
    "len(L) == 3 and all('seq' in x for x in L)"
out=$(fl verify)
expect_json "verify passes once there is room" "$out" "d['ok'] is True and d['problems'] == []"

# ---- restart: everything acknowledged is still there ----
stop_server "$SRV"
check "SIGTERM after a full disk: exit status 0" test $? = 0
start_server full || exit 1
SRV=$SRV_PID
total=$(fl log | pyj "len(L)")
check "after a restart the log holds every acknowledged event" \
    test "$total" = $(($(wc -w <<<"$r1") + $(wc -w <<<"$r2") + 6))
out=$(fl verify)
expect_json "verify passes after the restart" "$out" "d['ok'] is True"
stop_server "$SRV"

# ---- a data directory flowlogd cannot write ----
# start_bad DATA: run flowlogd on DATA (it must refuse to start); sets BAD_ST and BAD_ERR.
start_bad() {
    timeout 30 "$FLOWLOGD" --data "$1" --listen 127.0.0.1:0 --port-file "$WORK/bad.port" \
        --sync full >"$WORK/bad.log" 2>&1
    BAD_ST=$?
    BAD_ERR=$(cat "$WORK/bad.log")
    diag "flowlogd --data $1: exit status $BAD_ST: $BAD_ERR"
}
mount -o remount,ro "$DISK"
start_bad "$DISK/data"
check "an existing store on a read-only file system: exit status 1 (no crash, no hang)" \
    test "$BAD_ST" = 1
check "... with a message naming the directory and the cause" \
    grep -q "$DISK/data.*\(not writable\|Read-only\)" "$WORK/bad.log"
start_bad "$DISK/new"
check "a new data directory on a read-only file system: exit status 1" test "$BAD_ST" = 1
check "... with a message naming the directory and the cause" \
    grep -q "$DISK/new.*Read-only" "$WORK/bad.log"

# ---- a new data directory on a full disk ----
# LMDB writes its lock file through mmap: on a full disk that would be SIGBUS (exit status 135).
# The store reserves the lock file's blocks first, so a full disk is a clear error instead.
NEAR=$WORK/near
if mount_tmpfs "$NEAR" 1m; then
    dd if=/dev/zero of="$NEAR/filler" bs=64k count=64 2>/dev/null
    start_bad "$NEAR/data"
    # (ASan turns SIGBUS into exit status 1: a clear message means an error line, no report.)
    if [ "$BAD_ST" = 1 ] && grep -q "error:.*\(full\|No space\)" "$WORK/bad.log" &&
        ! grep -q "Sanitizer" "$WORK/bad.log"; then
        ok "a new data directory on a full disk: a clear message, exit status 1"
    else
        not_ok "a new data directory on a full disk: a clear message, exit status 1"
        diag "status $BAD_ST; $(tail -n 5 "$WORK/bad.log")"
    fi
else
    ok "# SKIP cannot mount a second tmpfs"
fi
