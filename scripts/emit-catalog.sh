#!/usr/bin/env bash
# Emits every variant of examples/*.attn and bench/cpu/variants.attn at the
# last stage of each target into OUTDIR, one file per (example, target):
#   cpu     attnc emit FILE --stage llvm
#   sm_90a  attnc emit FILE --target sm_90a --stage ptx
#   sm_80   attnc emit FILE --target sm_80 --stage ptx
#   gfx942  attnc emit FILE --target gfx942 --stage amdgcn
# Combinations that fail leave NAME.TARGET.err (stderr and exit status)
# instead, and are listed in OUTDIR/ERRORS. For refactors that must not
# change the output (issue 18): run it before and after, then diff -r.
# ATTNC picks the binary (default build/bin/attnc); ATTNC_FLAGS adds options
# to every command (e.g. "--lse --split-kv=4").
set -uo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 1
fi
mkdir -p "$1" || exit 1
out=$(cd "$1" && pwd) || exit 1
cd "$(dirname "$0")/.." || exit 1
ATTNC=${ATTNC:-build/bin/attnc}
ATTNC_FLAGS=${ATTNC_FLAGS:-}
: >"$out/ERRORS"
ok=0 failed=0
targets=("cpu:--stage llvm" "sm_90a:--target sm_90a --stage ptx"
         "sm_80:--target sm_80 --stage ptx"
         "gfx942:--target gfx942 --stage amdgcn")
for file in examples/*.attn bench/cpu/variants.attn; do
  name=$(basename "$file" .attn)
  [ "$file" = bench/cpu/variants.attn ] && name=bench-cpu-variants
  for t in "${targets[@]}"; do
    target=${t%%:*}
    # shellcheck disable=SC2086 # the options are word lists
    if "$ATTNC" emit "$file" ${t#*:} $ATTNC_FLAGS >"$out/$name.$target" 2>"$out/$name.$target.err"; then
      rm -f "$out/$name.$target.err"
      ok=$((ok + 1))
    else
      echo "exit $?" >>"$out/$name.$target.err"
      rm -f "$out/$name.$target"
      echo "$name $target" >>"$out/ERRORS"
      failed=$((failed + 1))
    fi
  done
done
echo "$ok outputs, $failed failed (listed in $out/ERRORS)"
