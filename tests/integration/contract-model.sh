#!/usr/bin/env bash
# contract-model.sh: a black-box differential test. model/model.py is a reference model of the
# contract's events, appends and reads (CONTRACT.md sections 2-4, written from the contract
# alone); model/drive.py drives a fresh flowlogd per seed with seeded random appends through
# the CLI (single events, atomic batches, pipelined lines of three tenants at once, rollbacks,
# retries, malformed and refused events, writer/reader roles) and compares every append's
# outcome with the model's, which follows the seqs and ts the server acknowledged. Then it
# compares state as of every seq of every flow (over the wire, model/msgwire.py), and through the
# CLI state, as-of-time, history, log, timeline and table reads (sampled) and four log --follow
# subscribers. A last run takes model/drive.py's targeted probes (NUL bytes in ids, tenant names
# that prefix each other, boundary integers, durations, a rollback chain). After each run the
# server's verify passes and SIGTERM stops it with status 0.
#
# A failed check prints the first discrepancies with a command reproducing each ($S: a flowlogd
# on the kept data directory, started with --tokens on the kept tokens file); every discrepancy
# is in the kept $WORK/seed-N/report.json. Seeds with concurrent rounds are not exactly
# repeatable (the interleaving decides later seqs), but the same seed exercises the same mix.
#
# Longer runs by hand (from the build directory):
#   MODEL_SEEDS=1,2,3,4,5 MODEL_STEPS=1500 make check TESTS=tests/integration/contract-model.sh
#   MODEL_SEEDS   comma-separated seeds (default 3,7)
#   MODEL_STEPS   events generated per seed (default 500; about 10 s a seed in a plain build)
#   MODEL_SAMPLES CLI reads sampled per kind and flow: as-of seqs, as-of times, runs, --where
#                 values (default 6, 3 in a sanitizer build); the wire read of every as-of seq
#                 is never sampled
. "$top_srcdir/tests/integration/lib.sh"

MODEL=$top_srcdir/tests/integration/model
SEEDS=${MODEL_SEEDS:-3,7}
STEPS=${MODEL_STEPS:-500}
SAMPLES=${MODEL_SAMPLES:-6}
# sanitizer builds: fewer CLI reads (an ASan CLI takes ~60 ms to start); the same appends and wire reads
[ "${FLOWLOG_SANITIZERS:-}" = yes ] && SAMPLES=${MODEL_SAMPLES:-3}
IFS=, read -ra seeds <<<"$SEEDS"
export PYTHONDONTWRITEBYTECODE=1 # never write into $top_srcdir (read-only in make distcheck)

# per seed: 6 checks of drive.py, verify, the exit status; the probes: 5 + 2
plan $((${#seeds[@]} * 8 + 7))

# The CLI: the real binary behind the libtool wrapper when it runs (one process per read; the
# wrapper's shell would double the time), else the wrapper.
CLI=$FLOWLOG
CLI_LIBS=
for b in "$top_builddir/.libs/lt-flowlog" "$top_builddir/.libs/flowlog"; do
    if [ -x "$b" ] && LD_LIBRARY_PATH=$top_builddir/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
        "$b" --help >/dev/null 2>&1; then
        CLI=$b
        CLI_LIBS=$top_builddir/.libs
        break
    fi
done
diag "CLI: $CLI"

python3 "$MODEL/drive.py" --write-tokens "$WORK/tokens" || exit 1
TOKEN=tok-a

# run NAME DRIVE_ARGS...: drive.py on a fresh server in $WORK/NAME, then verify and SIGTERM.
run() {
    local name=$1 st
    shift
    start_server "$name" --tokens "$WORK/tokens" || exit 1
    diag "$name: flowlogd on $SRV_ADDR, data in $WORK/$name/data"
    tap_from python3 "$MODEL/drive.py" --server "$SRV_ADDR" --flowlog "$CLI" \
        ${CLI_LIBS:+--flowlog-libpath "$CLI_LIBS"} --work "$WORK/$name" --samples "$SAMPLES" "$@"
    st=$?
    if [ $st -ne 0 ]; then
        case $name in
        seed-*) diag "rerun: MODEL_SEEDS=${name#seed-} MODEL_STEPS=$STEPS MODEL_SAMPLES=$SAMPLES make check TESTS=tests/integration/contract-model.sh" ;;
        *) diag "rerun: make check TESTS=tests/integration/contract-model.sh" ;;
        esac
        diag "every discrepancy: $WORK/$name/report.json; the data: $WORK/$name/data; the tokens: $WORK/tokens"
    fi
    out=$(fl verify)
    expect_json "${name/-/ }: verify passes after it (checksums, hash chain, projections)" "$out" \
        "d['ok'] is True"
    stop_server "$SRV_PID"
    st=$?
    check "${name/-/ }: flowlogd exits 0 on SIGTERM" test $st = 0
}

for seed in "${seeds[@]}"; do
    run "seed-$seed" --seed "$seed" --steps "$STEPS"
done
run probes --probe
