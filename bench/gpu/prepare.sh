#!/usr/bin/env bash
# Builds, on a machine with attnc, everything bench/gpu/run.sh needs on a GPU
# machine that has no LLVM/MLIR: one AOT bundle per benchmarked variant for
# each GPU target and head dim, libattnrt.so and attnrt.py, in bench/gpu/out/
# (gitignored: carry that folder to the GPU machine). sm_90a gets two sets,
# one per load path: bundles/sm_90a (--gpu-loads tma, run.sh's "attnc") and
# bundles/sm_90a-cpasync (--gpu-loads cp.async, its "attnc cp.async").
#
#   bash bench/gpu/prepare.sh
#   ATTNC=/path/to/attnc ATTNRT_LIB=/path/to/libattnrt.so bash bench/gpu/prepare.sh
#   TARGETS="sm_90a" HEAD_DIMS="64 128" bash bench/gpu/prepare.sh
#
# The variants are bench.py's catalog (`bench.py --bundles`).
set -euo pipefail
cd "$(dirname "$0")/../.."
ATTNC=${ATTNC:-build/bin/attnc}
ATTNRT_LIB=${ATTNRT_LIB:-build/runtime/libattnrt.so}
TARGETS=${TARGETS:-sm_90a sm_80}
HEAD_DIMS=${HEAD_DIMS:-128}
JOBS=${JOBS:-$(nproc)}
OUT=bench/gpu/out
for f in "$ATTNC" "$ATTNRT_LIB"; do
  [ -e "$f" ] || { echo "prepare.sh: $f not found (build first, or set ATTNC / ATTNRT_LIB)" >&2; exit 1; }
done

rm -rf "$OUT"
mkdir -p "$OUT/logs"
python3 bench/gpu/bench.py --bundles > "$OUT/bundles.txt"
jobs_file=$OUT/jobs.txt
: > "$jobs_file"
folders=""
for target in $TARGETS; do
  # bundle folder and --gpu-loads (- : the target's only path)
  case $target in
    sm_90a) sets="sm_90a:tma sm_90a-cpasync:cp.async" ;;
    *) sets="$target:-" ;;
  esac
  for set in $sets; do
    folder=${set%%:*} loads=${set#*:}
    folders="$folders $folder"
    for d in $HEAD_DIMS; do
      mkdir -p "$OUT/bundles/$folder/d$d"
      while read -r variant source; do
        echo "$target $folder $loads $d $variant $source" >> "$jobs_file"
      done < "$OUT/bundles.txt"
    done
  done
done

# One attnc per bundle (ptxas dominates), as many at once as there are cores.
compile_one() {
  local target=$1 folder=$2 loads=$3 d=$4 variant=$5 source=$6
  local base=$OUT/bundles/$folder/d$d/$variant
  local log=$OUT/logs/$folder-d$d-$variant.log
  local extra=()
  [ "$loads" = - ] || extra=(--gpu-loads "$loads")
  if "$ATTNC" compile "$source" --variant "$variant" --target "$target" \
      ${extra[@]+"${extra[@]}"} --head-dim "$d" -o "$base" > "$log" 2>&1; then
    rm -f "$base.h"  # the typed C++ launcher; Python needs only the bundle
  else
    echo "FAILED: $folder D=$d $variant ($source): see $log" >&2
    return 1
  fi
}
export -f compile_one
export ATTNC OUT
status=0
xargs -P "$JOBS" -L 1 bash -c 'compile_one "$@"' _ < "$jobs_file" || status=1
# Every bundle there, for its head dim, with the load path its folder names.
[ "$status" = 0 ] && { python3 bench/gpu/bench.py --check-prepared "$OUT" || status=1; }

cp -L "$ATTNRT_LIB" "$OUT/libattnrt.so"
cp python/attnrt.py "$OUT/attnrt.py"
{
  echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (with local changes)')"
  echo "compiler $("$ATTNC" --version 2>&1 | head -1)"
  echo "prepared $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "targets $TARGETS (bundle folders$folders); head dims $HEAD_DIMS"
} > "$OUT/PREPARED"
rm -f "$jobs_file"

count=$(find "$OUT/bundles" -name '*.attnpkg' | wc -l)
echo "prepare.sh: $count bundles ($(wc -l < "$OUT/bundles.txt") variants x folders {${folders# }} x head dims {$HEAD_DIMS}), $(du -sh "$OUT" | cut -f1) in $OUT"
[ "$status" = 0 ] || { echo "prepare.sh: some bundles failed to compile" >&2; exit 1; }
