#!/usr/bin/env bash
# Fuzzes every parser target in tests/fuzz.rs for MINUTES (default 10) of wall time in all, on
# the stable toolchain: the targets run side by side, one per CPU, each for its share of the
# time, built with the `fuzz` profile (optimized, with overflow checks and debug assertions).
#
#   scripts/fuzz.sh [MINUTES]          STREAMGATE_FUZZ_SEED=N to repeat a run
#
# A crash fails its target and names the input saved under target/fuzz-crashes/<target>/;
# copy it to tests/fuzz/regressions/<target>/ (every test run replays those), then fix it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need_cargo
minutes="${1:-10}"
if ! [[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "usage: scripts/fuzz.sh [MINUTES]" >&2
    exit 2
fi
targets=$(grep -c '^    Target { name:' tests/fuzz/targets.rs)
jobs=$(nproc)
# Each target's share: the targets run `jobs` at a time, in ceil(targets / jobs) rounds.
rounds=$(( (targets + jobs - 1) / jobs ))
seconds=$(awk -v m="$minutes" -v r="$rounds" 'BEGIN { s = m * 60 / r; if (s < 1) s = 1; print s }')
echo "fuzzing $targets targets for $minutes min: $jobs at a time, $seconds s each"
cargo test --profile fuzz --locked --test fuzz --no-run
STREAMGATE_FUZZ_SECONDS="$seconds" cargo test --profile fuzz --locked --test fuzz -- --test-threads="$jobs" --nocapture 2>&1 |
    grep -E '^(fuzz |test |thread .* panicked|test result)'
