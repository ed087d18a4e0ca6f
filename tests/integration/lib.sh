# lib.sh: sourced by the integration tests (not a test itself).
#
# Each test starts the real flowlogd on a fresh temporary directory and an ephemeral loopback
# port, drives it only through the flowlog CLI with --json, checks the JSON with python3 (stdlib
# only; jq is not assumed) and prints TAP. Every server started is killed when the test exits.
set -u
: "${top_builddir:?run through make check, or set top_builddir and top_srcdir}"
: "${top_srcdir:?}"

FLOWLOGD=$top_builddir/flowlogd
FLOWLOG=$top_builddir/flowlog
WORK=$(mktemp -d "${TMPDIR:-/tmp}/flowlog-it.XXXXXX")
SRV_PIDS=()
TAP_N=0
TAP_FAILED=0
unset FLOWLOG_SERVER FLOWLOG_TOKEN

# Kill every server still running, then remove the work directory (kept when a check failed).
cleanup() {
    local p
    for p in ${SRV_PIDS[@]+"${SRV_PIDS[@]}"}; do
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ "$TAP_FAILED" = 0 ]; then
        rm -rf "$WORK"
    else
        echo "# kept $WORK for inspection"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

plan() { echo "1..$1"; }
ok() {
    TAP_N=$((TAP_N + 1))
    echo "ok $TAP_N - $*"
}
not_ok() {
    TAP_N=$((TAP_N + 1))
    TAP_FAILED=1
    echo "not ok $TAP_N - $*"
}
# check DESCRIPTION COMMAND...: one TAP line from the command's status.
check() {
    local d=$1
    shift
    if "$@"; then ok "$d"; else not_ok "$d"; fi
}
# diag TEXT...: a TAP comment (shown in the test's .log).
diag() { printf '%s\n' "$*" | sed 's/^/# /'; }

# wait_until SECONDS COMMAND...: poll (every 20 ms) until the command succeeds.
wait_until() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.02
    done
}

# start_server NAME [flowlogd options...]: start flowlogd on $WORK/NAME (data in NAME/data) on
# an ephemeral port; sets SRV_PID and SRV_ADDR. Options like --tokens may follow; --sync is
# $SYNC (default none: these tests do not pull the power).
start_server() {
    local name=$1 dir=$WORK/$1
    shift
    mkdir -p "$dir"
    rm -f "$dir/port"
    "$FLOWLOGD" --data "$dir/data" --listen 127.0.0.1:0 --port-file "$dir/port" --sync "${SYNC:-none}" \
        "$@" >>"$dir/server.log" 2>&1 &
    SRV_PID=$!
    SRV_PIDS+=("$SRV_PID")
    if ! wait_until 30 test -s "$dir/port"; then
        diag "flowlogd did not start; its log:"
        diag "$(tail -n 20 "$dir/server.log")"
        return 1
    fi
    SRV_ADDR=127.0.0.1:$(cat "$dir/port")
}

# stop_server PID [SIGNAL]: signal the server (TERM by default) and wait for it to exit.
# Returns its exit status.
stop_server() {
    local pid=$1 sig=${2:-TERM} rc
    kill -"$sig" "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rc=$?
    local keep=()
    for p in ${SRV_PIDS[@]+"${SRV_PIDS[@]}"}; do [ "$p" = "$pid" ] || keep+=("$p"); done
    SRV_PIDS=(${keep[@]+"${keep[@]}"})
    return $rc
}

# fl ARGS...: the CLI against the current server with --json (token from $TOKEN or --data).
fl() {
    if [ -n "${TOKEN:-}" ]; then
        "$FLOWLOG" --server "$SRV_ADDR" --token "$TOKEN" --json "$@"
    else
        "$FLOWLOG" --server "$SRV_ADDR" --data "$DATA" --json "$@"
    fi
}

# pyj EXPR: evaluate a Python expression over JSON lines on stdin and print the result (JSON
# unless it is a str). Names: L = every line parsed, d = the first, json.
pyj() {
    python3 -c '
import json, re, sys
L = [json.loads(l) for l in sys.stdin.read().splitlines() if l.strip()]
d = L[0] if L else None
r = eval("(" + sys.argv[1] + "\n)")
print(r if isinstance(r, str) else json.dumps(r))' "$1"
}

# pyt EXPR: succeed when the Python expression over JSON lines on stdin is true (as pyj).
pyt() {
    python3 -c '
import json, re, sys
try:
    L = [json.loads(l) for l in sys.stdin.read().splitlines() if l.strip()]
    d = L[0] if L else None
    sys.exit(0 if eval("(" + sys.argv[1] + "\n)") else 1)
except Exception as e:
    print("# pyt: %s: %r" % (type(e).__name__, e))
    sys.exit(1)' "$1"
}

# expect_json DESCRIPTION OUTPUT EXPR: a TAP line for EXPR over OUTPUT; shows OUTPUT on failure.
expect_json() {
    if printf '%s\n' "$2" | pyt "$3"; then
        ok "$1"
    else
        not_ok "$1"
        diag "expected: $3"
        diag "got: $(printf '%s' "$2" | head -c 2000)"
    fi
}

# expect_error DESCRIPTION CODE OUTPUT STATUS: the CLI exited non-zero and its last line is
# {"error": {"code": CODE, ...}}.
expect_error() {
    local desc=$1 code=$2 out=$3 st=$4
    if [ "$st" -ne 0 ] && printf '%s\n' "$out" | pyt "L[-1]['error']['code'] == '$code'"; then
        ok "$desc"
    else
        not_ok "$desc"
        diag "expected error $code and a non-zero status; status $st, got: $(printf '%s' "$out" | head -c 2000)"
    fi
}

# ev TYPE JSON_DATA [EXTRA_JSON_MEMBERS]: one event as a JSON line.
ev() {
    printf '{"type": "%s", "data": %s%s}\n' "$1" "$2" "${3:+, $3}"
}

# tap_from COMMAND...: run a C test program that prints unnumbered TAP ("ok - ...",
# "not ok - ...", "# ..."), numbering its lines into this test's sequence. Returns its status.
tap_from() {
    local line
    while IFS= read -r line; do
        case $line in
        "ok - "*) ok "${line#ok - }" ;;
        "not ok - "*) not_ok "${line#not ok - }" ;;
        "#"*) printf '%s\n' "$line" ;;
        *) diag "$line" ;;
        esac
    done < <("$@" 2>&1)
    wait $! 2>/dev/null
}
