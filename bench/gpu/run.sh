#!/usr/bin/env bash
# The GPU benchmark, one command on the GPU machine, from the repository root
# (Python with torch >= 2.5 and Triton; no LLVM/MLIR needed):
#
#   bash bench/gpu/run.sh                 # smoke run, then the full table: 9 minutes
#   bash bench/gpu/run.sh --quick         # tiny shapes, timed: a quick run
#   bash bench/gpu/run.sh --smoke         # correctness only, tiny shapes (< 1 minute)
#   bash bench/gpu/run.sh --only dense,causal,dense_16k
#   bash bench/gpu/run.sh --only-decode   # the decode section only (~1 minute)
#   bash bench/gpu/run.sh --only-backward # the backward section only (~2 minutes)
#   bash bench/gpu/run.sh --only causal_bwd --quick   # one backward row, tiny
#
# Needs bench/gpu/out from bench/gpu/prepare.sh, run where attnc is built.
# Writes results.md, results.json and log.txt to $OUT if set, else to
# bench/gpu/out/results. BUDGET_S (default 540) bounds the run: past it no
# new work starts and flex compilation is skipped when little time is left;
# its last 60 s (--decode-budget-s) are the decode section's, which runs
# after the catalog: decode throughput in bytes of K/V read per second
# against a device copy of the same bytes (--no-decode leaves it out). The
# 120 s before them (--backward-budget-s) are the backward section's,
# between the two: attnc's backward (bundles from backward/<arch>, built
# --backward --lse) against flex_attention's backward (--no-backward leaves
# it out). Every flag goes on to bench.py.
# On compute capability 9.x the sm_90a kernels run twice: TMA loads ("attnc",
# bundles/sm_90a) and cp.async loads ("attnc cp.async",
# bundles/sm_90a-cpasync; --no-cpasync leaves that column out).
set -euo pipefail
cd "$(dirname "$0")/../.."
PREP=bench/gpu/out
PY=${PYTHON:-python3}
if [ ! -f "$PREP/PREPARED" ]; then
  echo "run.sh: $PREP is missing: run bench/gpu/prepare.sh where attnc is built, then carry $PREP" >&2
  exit 1
fi
RESULTS=${OUT:-$PREP/results}
mkdir -p "$RESULTS"

# sm_90a cubins run on compute capability 9.0; anything else gets the sm_80
# bundle (its cubin on 8.x, its PTX compiled by the driver elsewhere).
CC=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
CPASYNC=
case $CC in
  9.*) ARCH=sm_90a
       if [ -d "$PREP/bundles/sm_90a-cpasync" ]; then
         CPASYNC=sm_90a-cpasync
       else
         echo "run.sh: no $PREP/bundles/sm_90a-cpasync (an older prepare.sh): TMA kernels only" >&2
       fi ;;
  *) ARCH=sm_80 ;;
esac
if [ ! -d "$PREP/bundles/$ARCH" ]; then
  echo "run.sh: no $PREP/bundles/$ARCH for this compute capability $CC GPU: run TARGETS=\"$ARCH\" bash bench/gpu/prepare.sh where attnc is built (its default is sm_90a only), then carry $PREP" >&2
  exit 1
fi
echo "== GPU compute capability $CC: $ARCH${CPASYNC:+ (TMA) and $CPASYNC} bundles; $(tr '\n' ';' < "$PREP/PREPARED")"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null || true

export ATTNRT_LIB=$PWD/$PREP/libattnrt.so
BUDGET=${BUDGET_S:-540}
bench() { # out folder, budget, flags...
  local out=$1 budget=$2; shift 2
  mkdir -p "$out"
  "$PY" bench/gpu/bench.py --arch "$ARCH" ${CPASYNC:+--cpasync-bundles "$CPASYNC"} \
    --prepared "$PREP" --out "$out" --budget-s "$budget" "$@" 2>&1 \
    | tee "$out/log.txt"
}

# First the smoke run (every selected attnc kernel at tiny shapes against the
# reference, no flex, one launch each; SMOKE_S, default 60 s), so a broken
# kernel shows within the first minute of a GPU window; then the timed run
# gets what is left of the budget. --quick / --smoke runs are smoke runs
# themselves; SMOKE=0 skips it.
smoke_status=0
case " $* " in *" --quick "*|*" --smoke "*) SMOKE=0 ;; esac
if [ "${SMOKE:-1}" != 0 ]; then
  started=$SECONDS
  echo "== smoke run (correctness at tiny shapes, ${SMOKE_S:-60} s at most): $RESULTS/smoke"
  # The sections' shares shrink with the budget: backward 15 s, decode 10 s.
  bench "$RESULTS/smoke" "${SMOKE_S:-60}" --smoke --backward-budget-s 15 \
    --decode-budget-s 10 "$@" || smoke_status=$?
  BUDGET=$((BUDGET - (SECONDS - started)))
  echo "== timed run: $BUDGET s left of ${BUDGET_S:-540}"
fi
status=0
bench "$RESULTS" "$BUDGET" "$@" || status=$?
[ $smoke_status = 0 ] || echo "run.sh: the smoke run failed (exit $smoke_status): see $RESULTS/smoke/results.md" >&2
exit $(( status ? status : smoke_status ))
