#!/usr/bin/env bash
# The CPU benchmark, one command: attnc (dense and sparse variants) against
# ONNX Runtime's fused CPU Attention operator and OpenBLAS sgemm on the same
# inputs, checked against each other, then docs/benchmarks.md with a plot.
#
#   bash bench/cpu/run.sh            # S=8192, H=4, D=64, f32 (issue 5's setup)
#   S=4096 H=8 bash bench/cpu/run.sh
#   CPU=x86-64-v3 bash bench/cpu/run.sh   # AVX2 kernels (and AVX2 peaks)
#
# Every kernel is reported as a fraction of the machine's own peaks,
# measured first (attn-bench-peak: f32 FMA, int8 dot products, read
# bandwidth, for the ISA the kernels use). Without node/onnxruntime-node or
# OpenBLAS (no network, say) their rows are skipped and the report says so.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
S=${S:-8192} H=${H:-4} D=${D:-64} WINDOW=${WINDOW:-256} DOCS=${DOCS:-8}
REPS=${REPS:-5} CPU=${CPU:-native}
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

echo "== setting up (OpenBLAS, matplotlib, onnxruntime-node)"
{ $SUDO apt-get update -qq &&
  $SUDO apt-get install -y -qq libopenblas-dev python3-matplotlib \
    python3-numpy >/dev/null; } || echo "  (apt-get failed: OpenBLAS may be missing)"
bash scripts/setup.sh || echo "  (scripts/setup.sh failed: using what is installed)"
BUILD_DIR=${BUILD_DIR:-build}
[ -f "$BUILD_DIR/build.ninja" ] && cmake "$BUILD_DIR" >/dev/null
bash scripts/build.sh >/dev/null
# The npm package's install script only fetches GPU parts from outside.
(cd bench/cpu && npm install --ignore-scripts --no-audit --no-fund >/dev/null 2>&1) || true
ORT=0
if command -v node >/dev/null && [ -d bench/cpu/node_modules/onnxruntime-node ]; then
  ORT=1
else
  echo "  (no node or onnxruntime-node: ONNX Runtime is not run)"
fi
B=$ROOT/$BUILD_DIR/bin
OUT=$ROOT/bench/cpu/out
rm -rf "$OUT" && mkdir -p "$OUT"
THREADS=$(nproc)
export ATTN_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
export ATTNC_CACHE_DIR=$OUT/jit-cache
V=bench/cpu/variants.attn

echo "== the machine's peaks (for the ISA of --cpu $CPU)"
"$B/attn-bench-peak" --cpu "$CPU" --json > "$OUT/peak.json"
echo "  $(cat "$OUT/peak.json")"

echo "== correctness: attnc vs ONNX Runtime on the same inputs (S=1024)"
"$B/attn-npy" rand "$OUT/q1.npy" f32 1,$H,1024,$D 1
"$B/attn-npy" rand "$OUT/k1.npy" f32 1,$H,1024,$D 2
"$B/attn-npy" rand "$OUT/v1.npy" f32 1,$H,1024,$D 3
check() { # variant, extra ORT flags
  "$B/attnc" run $V --variant "$1" --cpu "$CPU" --q "$OUT/q1.npy" \
    --k "$OUT/k1.npy" --v "$OUT/v1.npy" -o "$OUT/o_$1.npy"
  [ $ORT = 1 ] || return 0
  node bench/cpu/ort_attention.mjs --q "$OUT/q1.npy" --k "$OUT/k1.npy" \
    --v "$OUT/v1.npy" --expect "$OUT/o_$1.npy" --reps 1 $2 \
    > "$OUT/check_$1.json"
  echo "  $1: $(cat "$OUT/check_$1.json")"
}
check dense ""
check causal "--causal"

echo "== timing at B=1 H=$H S=$S D=$D f32 on $THREADS threads"
"$B/attn-npy" rand "$OUT/q.npy" f32 1,$H,$S,$D 1
"$B/attn-npy" rand "$OUT/k.npy" f32 1,$H,$S,$D 2
"$B/attn-npy" rand "$OUT/v.npy" f32 1,$H,$S,$D 3
"$B/attn-npy" range "$OUT/doc.npy" 1,$S $((S / DOCS))
if [ $ORT = 1 ]; then
  node bench/cpu/ort_attention.mjs --q "$OUT/q.npy" --k "$OUT/k.npy" \
    --v "$OUT/v.npy" --reps $REPS > "$OUT/ort_dense.json"
  echo "  onnxruntime dense:  $(cat "$OUT/ort_dense.json")"
  node bench/cpu/ort_attention.mjs --q "$OUT/q.npy" --k "$OUT/k.npy" \
    --v "$OUT/v.npy" --causal --reps $REPS > "$OUT/ort_causal.json"
  echo "  onnxruntime causal: $(cat "$OUT/ort_causal.json")"
fi
if [ -x "$B/attn-sgemm-roofline" ]; then
  "$B/attn-sgemm-roofline" 1 $H $S $D $REPS > "$OUT/sgemm.json"
  echo "  openblas 2x sgemm:  $(cat "$OUT/sgemm.json")"
fi
bench() { # name, variant, extra args
  "$B/attnc" bench $V --variant "$2" --shape 1,$H,$H,$S,$S --head-dim $D \
    --cpu "$CPU" --reps $REPS --json $3 > "$OUT/attnc_$1.json"
  echo "  attnc $1: $(cat "$OUT/attnc_$1.json")"
}
bench dense dense ""
bench causal causal ""
bench window window "--set window=$WINDOW"
bench documents documents "--set doc=$OUT/doc.npy"
bench softcap_causal softcap_causal ""
bench moba moba ""

echo "== backward over forward time (dense and sparse masks, same inputs)"
"$B/attn-bench-backward" --s "$S" --h "$H" --d "$D" --reps "$REPS" \
  --cpu "$CPU" --window "$WINDOW" --docs "$DOCS" --json "$OUT/backward.json"

echo "== decode at 64k: K/V bytes read per second vs a memcpy of the same bytes"
"$B/attn-bench-decode" --cpu "$CPU" --reps $((REPS * 4)) --json "$OUT/decode.json"

# Debian's python3 has the matplotlib just installed.
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
"$PY" bench/cpu/report.py "$OUT" "$S" "$H" "$D" "$WINDOW" "$DOCS" "$THREADS" \
  "$CPU"
