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
#   TARGETS="sm_90a sm_80" HEAD_DIMS="64 128" bash bench/gpu/prepare.sh
#
# The variants are bench.py's catalog (`bench.py --bundles`). The decode
# section's bundles (`bench.py --decode-bundles`: bf16 K/V with split-KV
# auto and 16, int8 and fp8e4m3 K/V) go to decode/<folder>/d<D>/; a
# quantized one attnc does not compile for the target leaves NAME.unsupported
# (attnc's message) instead, which bench.py reports as not supported on GPU
# yet: only the others must compile. Quantized bundles take attnc's own load
# path (cp.async: TMA loads take unquantized K/V only) in every folder.
# The backward section's bundles (`bench.py --backward-bundles`: the
# catalog variants it runs, compiled --backward --lse) go to
# backward/<target>/d<D>/, one folder per target (the target's default
# loads); every one must compile.
set -euo pipefail
cd "$(dirname "$0")/../.."
ATTNC=${ATTNC:-build/bin/attnc}
ATTNRT_LIB=${ATTNRT_LIB:-build/runtime/libattnrt.so}
# The GPUs lent to this project are Hoppers (H100, H200): sm_90a by default
# keeps the prepare step and the carried folder small; an Ampere or other
# card needs TARGETS="sm_80" (run.sh says so when its bundles are missing).
TARGETS=${TARGETS:-sm_90a}
HEAD_DIMS=${HEAD_DIMS:-128}
JOBS=${JOBS:-$(nproc)}
OUT=bench/gpu/out
for f in "$ATTNC" "$ATTNRT_LIB"; do
  [ -e "$f" ] || { echo "prepare.sh: $f not found (build first, or set ATTNC / ATTNRT_LIB)" >&2; exit 1; }
done

rm -rf "$OUT"
mkdir -p "$OUT/logs"
python3 bench/gpu/bench.py --bundles > "$OUT/bundles.txt"
python3 bench/gpu/bench.py --decode-bundles > "$OUT/decode-bundles.txt"
python3 bench/gpu/bench.py --backward-bundles > "$OUT/backward-bundles.txt"
jobs_file=$OUT/jobs.txt
: > "$jobs_file"
folders=""
for target in $TARGETS; do
  for d in $HEAD_DIMS; do
    mkdir -p "$OUT/backward/$target/d$d"
    while read -r variant source; do
      echo "backward $target $target - $d $variant $source" >> "$jobs_file"
    done < "$OUT/backward-bundles.txt"
  done
  # bundle folder and --gpu-loads (- : the target's only path)
  case $target in
    sm_90a) sets="sm_90a:tma sm_90a-cpasync:cp.async" ;;
    *) sets="$target:-" ;;
  esac
  for set in $sets; do
    folder=${set%%:*} loads=${set#*:}
    folders="$folders $folder"
    for d in $HEAD_DIMS; do
      mkdir -p "$OUT/bundles/$folder/d$d" "$OUT/decode/$folder/d$d"
      while read -r variant source; do
        echo "catalog $target $folder $loads $d $variant $source" >> "$jobs_file"
      done < "$OUT/bundles.txt"
      while read -r name need source variant flags; do
        echo "decode $target $folder $loads $d $name $need $source $variant $flags" \
          >> "$jobs_file"
      done < "$OUT/decode-bundles.txt"
    done
  done
done

# One attnc per bundle (ptxas dominates), as many at once as there are cores.
# catalog TARGET FOLDER LOADS D VARIANT SOURCE
# backward TARGET FOLDER - D VARIANT SOURCE
# decode TARGET FOLDER LOADS D NAME needed|optional SOURCE VARIANT FLAGS...
compile_one() {
  local kind=$1 target=$2 folder=$3 loads=$4 d=$5 base log what need=needed
  local variant source extra=()
  [ "$loads" = - ] || extra=(--gpu-loads "$loads")
  if [ "$kind" = catalog ]; then
    variant=$6 source=$7
    base=$OUT/bundles/$folder/d$d/$variant
    log=$OUT/logs/$folder-d$d-$variant.log
    what="$folder D=$d $variant ($source)"
    shift 7
  elif [ "$kind" = backward ]; then
    variant=$6 source=$7
    base=$OUT/backward/$folder/d$d/$variant
    log=$OUT/logs/backward-$folder-d$d-$variant.log
    what="backward $folder D=$d $variant ($source)"
    shift 7
    set -- --backward --lse
  else
    need=$7 source=$8 variant=$9
    base=$OUT/decode/$folder/d$d/$6
    log=$OUT/logs/decode-$folder-d$d-$6.log
    shift 9
    what="decode $folder D=$d $(basename "$base") ($*)"
    # Quantized codes stream by cp.async (attnc refuses TMA for them): the
    # folder's load path is for bf16 K/V.
    case " $* " in *" --kv-dtype "*) extra=() ;; esac
  fi
  if "$ATTNC" compile "$source" --variant "$variant" --target "$target" \
      ${extra[@]+"${extra[@]}"} --head-dim "$d" "$@" -o "$base" > "$log" 2>&1; then
    rm -f "$base.h"  # the typed C++ launcher; Python needs only the bundle
  elif [ "$need" = optional ]; then
    cp "$log" "$base.unsupported"
    echo "unsupported: $what: $(grep -m1 error "$log" || head -1 "$log")" >&2
  else
    echo "FAILED: $what: see $log" >&2
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
  unsupported=$(cd "$OUT/decode" && find . -name '*.unsupported' | sed 's|^\./||; s|\.unsupported$||' | sort | paste -sd' ')
  echo "backward bundles $(cut -d' ' -f1 "$OUT/backward-bundles.txt" | paste -sd' ') (--backward --lse)"
  echo "decode bundles $(cut -d' ' -f1 "$OUT/decode-bundles.txt" | paste -sd' '); not compiled by attnc (unsupported): ${unsupported:-none}"
} > "$OUT/PREPARED"
rm -f "$jobs_file"

count=$(find "$OUT/bundles" -name '*.attnpkg' | wc -l)
decode=$(find "$OUT/decode" -name '*.attnpkg' | wc -l)
backward=$(find "$OUT/backward" -name '*.attnpkg' | wc -l)
unsupported=$(find "$OUT/decode" -name '*.unsupported' | wc -l)
echo "prepare.sh: $count bundles ($(wc -l < "$OUT/bundles.txt") variants x folders {${folders# }} x head dims {$HEAD_DIMS}), $backward backward bundles ($(wc -l < "$OUT/backward-bundles.txt") variants x targets {$TARGETS}) and $decode decode bundles ($unsupported more not supported by attnc for their target), $(du -sh "$OUT" | cut -f1) in $OUT"
[ "$status" = 0 ] || { echo "prepare.sh: some bundles failed to compile" >&2; exit 1; }
