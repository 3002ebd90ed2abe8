#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, one after the other, at the lowest priority.
#
#   fuzz/run.sh [seconds-per-target] [target...]
#
# Default: 10 s per target (a smoke run, about a minute in all). New interesting inputs go to
# fuzz/target/corpus/<target>/ (merge them into fuzz/corpus/ as docs/fuzzing.md says); a crash stops the
# script with the input in fuzz/artifacts/<target>/. Needs cargo-fuzz (`cargo install
# cargo-fuzz`); runs on the stable toolchain through RUSTC_BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-10}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
# One build for all targets, so that the time given to each target is spent fuzzing.
nice -n 19 cargo fuzz build --sanitizer none --debug-assertions
for t in "${targets[@]}"; do
    echo "== $t: ${secs}s"
    log="target/run-$t.log"
    mkdir -p "target/corpus/$t" "corpus/$t"
    status=0
    # New coverage lands in the first directory (ignored by git), so a run leaves the committed
    # seeds alone; -print_final_stats gives the executions and exec/s to report.
    nice -n 19 cargo fuzz run "$t" --sanitizer none --debug-assertions \
        "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1 || status=$?
    grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log" >&2
        echo "!! $t failed (exit $status); the input is in fuzz/artifacts/$t/, the log in fuzz/$log" >&2
        exit 1
    fi
done
