#!/bin/bash
# usage: cgsrv.sh BUILD OUTDIR
B=$1; O=$2; mkdir -p $O; rm -rf $O/data $O/port $O/cg.*
echo "TOK * admin" > $O/tokens; chmod 600 $O/tokens
valgrind --tool=callgrind --callgrind-out-file=$O/cg.%p --separate-threads=yes $B/flowlogd --data $O/data --listen 127.0.0.1:0 --port-file $O/port --tokens $O/tokens --log-level warn > $O/srv.log 2>&1 &
VP=$!
for i in $(seq 1 100); do [ -s $O/port ] && break; sleep 0.3; done
LD_LIBRARY_PATH=$B/.libs $B/bench/.libs/flowlog-bench --server=127.0.0.1:$(cat $O/port) --token=TOK --modes=step --conns=64 --reps=1 --reads=0 --scale=0.2 2>&1 | grep "run 1" > $O/bench.txt
kill -INT $VP; wait $VP
for f in $O/cg.*-0[12]; do echo "$f $(callgrind_annotate $f 2>/dev/null | grep 'PROGRAM TOTALS')"; done
