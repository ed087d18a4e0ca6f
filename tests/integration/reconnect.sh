#!/usr/bin/env bash
# reconnect.sh: one libflowlog handle kept for the whole test against the real flowlogd with
# --idle-timeout 1: the C program tests/integration/reconnect pauses 3 s between calls (the
# server closes the connection as idle each time) and its next call must still work, on a new
# connection, appending nothing twice; then the server is restarted, stopped and started again
# on the same port under the handle (the program asks for each step on its stdout and waits for
# our answer on its stdin). About 16 s.
. "$top_srcdir/tests/integration/lib.sh"

plan 17
# An operator acting for tenant "default": the test reads the server-wide counters
# (connections_total, closed_idle), which a tenant's admin does not see.
OPTOKEN=reconnect-operator-0123456789
printf '%s * admin\n' "$OPTOKEN" >"$WORK/tokens"
chmod 600 "$WORK/tokens"
start_server main --tokens "$WORK/tokens" --idle-timeout 1 || exit 1
PORT=${SRV_ADDR##*:}
RECONNECT=$top_builddir/tests/integration/reconnect

# tap_from with a conversation: the program's "# restart", "# stop" and "# start" are done here
# (on the same port, so the handle's address stays right), then answered with a line.
# Bash forgets PROG and PROG_PID as soon as the program exits: keep copies of its pipes and pid.
coproc PROG { "$RECONNECT" "$SRV_ADDR" "$OPTOKEN" default 2>&1; }
prog_pid=$PROG_PID
exec {FROM}<&"${PROG[0]}" {TO}>&"${PROG[1]}"
while IFS= read -r line <&"$FROM"; do
    case $line in
    "ok - "*) ok "${line#ok - }" ;;
    "not ok - "*) not_ok "${line#not ok - }" ;;
    "# restart" | "# stop" | "# start")
        diag "${line#\# }"
        if [ "$line" != "# start" ]; then
            stop_server "$SRV_PID" TERM
            check "flowlogd exits 0 on SIGTERM under the held handle" test $? -eq 0
        fi
        if [ "$line" != "# stop" ]; then
            start_server main --tokens "$WORK/tokens" --idle-timeout 1 --listen "127.0.0.1:$PORT" || not_ok "restart on port $PORT"
        fi
        echo go >&"$TO"
        ;;
    "#"*) printf '%s\n' "$line" ;;
    *) diag "$line" ;;
    esac
done
wait "$prog_pid"
check "the program exits 0" test $? -eq 0
exec {FROM}<&- {TO}>&-
