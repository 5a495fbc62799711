#!/usr/bin/env bash
# Runs the libFuzzer targets (test/fuzz) for SECONDS each (default 3600),
# JOBS at a time (default: the number of cores), and prints executions,
# coverage and findings per target (docs/hardening.md).
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
# FUZZ_CLOCK=cpu makes SECONDS CPU seconds per target (the fuzzer is
# interrupted when it has used them), so runs niced on a busy machine
# (FUZZ_NICE=19) still get their full budget.
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
  local wall=$SECONDS_EACH
  # A CPU budget needs no wall limit; the watcher below ends the run.
  [ "${FUZZ_CLOCK:-wall}" = cpu ] && wall=0
  # shellcheck disable=SC2086 # OPTIONS holds several flags
  nice -n "${FUZZ_NICE:-0}" "$DIR/bin/fuzz_$t" -max_total_time="$wall" -print_final_stats=1 \
    -artifact_prefix="$findings/" ${OPTIONS[$t]} "$work" \
    "test/fuzz/corpus/$t" ${EXTRA_SEEDS[$t]:-} >"$DIR/fuzz/$t.log" 2>&1 &
  local pid=$! tick cpu=0 start=$SECONDS
  tick=$(getconf CLK_TCK)
  # CPU time (user + system, all threads) from /proc, sampled until exit;
  # libFuzzer prints its final stats when interrupted.
  while [ -r "/proc/$pid/stat" ]; do
    cpu=$(awk -v t="$tick" '{sub(/^.*\) /, ""); printf "%d", ($12 + $13) / t}' \
      "/proc/$pid/stat" 2>/dev/null || echo "$cpu")
    echo "$cpu" >"$DIR/fuzz/$t.cpu"
    if [ "${FUZZ_CLOCK:-wall}" = cpu ] && [ "$cpu" -ge "$SECONDS_EACH" ]; then
      kill -INT "$pid" 2>/dev/null || true
    fi
    sleep 5
  done
  wait "$pid" || true
  echo $((SECONDS - start)) >"$DIR/fuzz/$t.wall"
}
mkdir -p "$DIR/fuzz"
# Findings are counted per run: earlier ones move to <target>-findings/earlier.
for t in $TARGETS; do
  if compgen -G "$DIR/fuzz/$t-findings/*-*" >/dev/null; then
    mkdir -p "$DIR/fuzz/$t-findings/earlier"
    mv "$DIR/fuzz/$t-findings/"*-* "$DIR/fuzz/$t-findings/earlier/"
  fi
done
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
  secs=$(cat "$DIR/fuzz/$t.wall" 2>/dev/null || true)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  # Slow units (over 10 s) are listed by libFuzzer but are not failures.
  found=$(find "$DIR/fuzz/$t-findings" -maxdepth 1 -type f \( -name 'crash-*' -o \
    -name 'leak-*' -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l)
  cpu=$(cat "$DIR/fuzz/$t.cpu" 2>/dev/null || true)
  printf '%-9s %12s %10s %8s %8s %8s %9s %s\n' "$t" "${execs:-?}" "${secs:-?}" \
    "${cpu:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$found"
done
