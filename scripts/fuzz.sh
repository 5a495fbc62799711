#!/usr/bin/env bash
# Runs the libFuzzer targets (test/fuzz) for SECONDS each (default 3600),
# JOBS at a time (default: the number of cores), and prints executions,
# coverage and findings per target (docs/hardening.md).
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
# Corpora grow in build-asan/fuzz/<target>; crashes land in
# build-asan/fuzz/<target>-findings/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-3600}
shift || true
TARGETS=${*:-frontend compile bundle npy launch}
JOBS=${JOBS:-$(nproc)}
DIR=${SANITIZE_DIR:-build-asan}
BUILD_DIR=$DIR CMAKE_ARGS="-DATTNC_FUZZ=ON" BUILD_TARGET=attn-sanitize-tests \
  bash scripts/build.sh
ROOT=$PWD
export ATTNC_CACHE_DIR=$ROOT/$DIR/test/jit-cache
declare -A OPTIONS=(
  [frontend]="-dict=test/fuzz/dict/attn.dict"
  [compile]="-dict=test/fuzz/dict/attn.dict -max_len=2048"
  [bundle]="-dict=test/fuzz/dict/bundle.dict -max_len=65537"
  [npy]="-dict=test/fuzz/dict/npy.dict"
  [launch]="-max_len=8192")
declare -A EXTRA_SEEDS=([frontend]=examples [compile]=examples)
run() {
  local t=$1 work=$DIR/fuzz/$t findings=$DIR/fuzz/$t-findings
  mkdir -p "$work" "$findings"
  local timer=()
  if [ -x /usr/bin/time ]; then timer=(/usr/bin/time -f '%U %S' -o "$DIR/fuzz/$t.cpu"); fi
  # shellcheck disable=SC2086 # OPTIONS holds several flags
  "${timer[@]}" "$DIR/bin/fuzz_$t" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
    -artifact_prefix="$findings/" ${OPTIONS[$t]} "$work" \
    "test/fuzz/corpus/$t" ${EXTRA_SEEDS[$t]:-} >"$DIR/fuzz/$t.log" 2>&1 || true
}
mkdir -p "$DIR/fuzz"
running=0
for t in $TARGETS; do
  run "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait
printf '%-9s %12s %10s %8s %8s %8s %9s %s\n' target executions seconds cpu_s cov ft corpus findings
for t in $TARGETS; do
  log=$DIR/fuzz/$t.log
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' || true)
  secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | awk '{print $5}' || true)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  # Slow units (over 10 s) are listed by libFuzzer but are not failures.
  found=$(find "$DIR/fuzz/$t-findings" -type f \( -name 'crash-*' -o \
    -name 'leak-*' -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l)
  cpu=$(awk '{printf "%d", $1 + $2}' "$DIR/fuzz/$t.cpu" 2>/dev/null || true)
  printf '%-9s %12s %10s %8s %8s %8s %9s %s\n' "$t" "${execs:-?}" "${secs:-?}" \
    "${cpu:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$found"
done
