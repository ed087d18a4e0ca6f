#!/usr/bin/env bash
# run.sh BUILD_FUZZ_DIR [TARGET...]: run each libFuzzer target for a bounded time and print TAP.
#
# BUILD_FUZZ_DIR holds the targets (tests/fuzz in a build configured with
# `CC=clang ./configure --enable-fuzzing`). Each target starts from its seed corpus
# (tests/fuzz/corpus/TARGET, read only) plus a working corpus kept in BUILD_FUZZ_DIR/work/TARGET,
# so repeated local runs go deeper. A target fails on any crash, sanitizer report, leak, timeout
# or out-of-memory; the input that did it is copied to BUILD_FUZZ_DIR/artifacts/ and the line to
# replay it is printed.
#
# Environment: FUZZ_SECONDS per target (default 60), FUZZ_JOBS targets at once (default: the
# number of CPUs), FUZZ_MAX_LEN (default 65536).
set -u
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: run.sh BUILD_FUZZ_DIR [TARGET...]}
dir=$(cd "$dir" && pwd)
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_wire fuzz_event fuzz_json)
secs=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
max_len=${FUZZ_MAX_LEN:-65536}

# run_one TARGET: fuzz it; leaves TARGET's log in $dir/work/TARGET.log and its status in .rc.
run_one() {
    local t=$1 work=$dir/work/$t art=$dir/work/$t.artifacts
    rm -rf "$art"
    mkdir -p "$work" "$art"
    # Leaks are checked per input (LSan after every run that mallocs more than it frees).
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        "$dir/$t" -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$art/" \
        "$work" "$here/corpus/$t" >"$dir/work/$t.log" 2>&1
    echo $? >"$dir/work/$t.rc"
}

echo "1..${#targets[@]}"
mkdir -p "$dir/work"
running=0
for t in "${targets[@]}"; do
    if [ ! -x "$dir/$t" ]; then
        echo 127 >"$dir/work/$t.rc"
        echo "$dir/$t is not built" >"$dir/work/$t.log"
        continue
    fi
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

n=0 failed=0
for t in "${targets[@]}"; do
    n=$((n + 1))
    log=$dir/work/$t.log
    rc=$(cat "$dir/work/$t.rc" 2>/dev/null || echo 1)
    found=$(ls "$dir/work/$t.artifacts" 2>/dev/null)
    runs=$(awk '/stat::number_of_executed_units:/{print $2}' "$log" 2>/dev/null)
    cov=$(grep -o 'cov: [0-9]*' "$log" 2>/dev/null | tail -n 1)
    size=$(ls "$dir/work/$t" 2>/dev/null | wc -l)
    if [ "$rc" = 0 ] && [ -z "$found" ]; then
        echo "ok $n - $t: ${runs:-?} inputs in ${secs} s, ${cov:-cov: ?}, working corpus $size"
        continue
    fi
    failed=1
    echo "not ok $n - $t: exit status $rc${found:+, found $(echo $found | tr '\n' ' ')}"
    mkdir -p "$dir/artifacts"
    for f in $found; do
        cp "$dir/work/$t.artifacts/$f" "$dir/artifacts/$t-$f"
        echo "# replay: $dir/$t $dir/artifacts/$t-$f"
    done
    grep -v '^#[0-9]\|^INFO:\|^\s*$' "$log" | head -n 60 | sed 's/^/# /'
done
exit $failed
