#!/usr/bin/env bash
# Fresh machine to demo: installs, builds, then runs every example variant
# on the CPU against the float64 reference and shows attnc on .npy files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
echo
echo "== Every example: compiled kernel vs float64 reference (CPU) =="
"$BUILD_DIR/bin/attn-examples" .
echo
echo "== attnc on .npy files =="
tmp=$(mktemp -d)
"$BUILD_DIR/bin/attn-npy" rand "$tmp/q.npy" f32 1,4,300,64 1
"$BUILD_DIR/bin/attn-npy" rand "$tmp/k.npy" f32 1,4,300,64 2
"$BUILD_DIR/bin/attn-npy" rand "$tmp/v.npy" f32 1,4,300,64 3
set -x
"$BUILD_DIR/bin/attnc" check examples/sliding_sink.attn
"$BUILD_DIR/bin/attnc" run examples/sliding_sink.attn --q "$tmp/q.npy" --k "$tmp/k.npy" \
  --v "$tmp/v.npy" --set window=128 -o "$tmp/o.npy" --lse --lse-out "$tmp/lse.npy"
"$BUILD_DIR/bin/attn-npy" check examples/sliding_sink.attn --q "$tmp/q.npy" --k "$tmp/k.npy" \
  --v "$tmp/v.npy" --set window=128 --o "$tmp/o.npy" --lse "$tmp/lse.npy"
"$BUILD_DIR/bin/attnc" bench examples/sliding_sink.attn --shape 1,8,8,2048,2048 --head-dim 64 --set window=256
{ set +x; } 2>/dev/null
rm -rf "$tmp"

echo
echo "== the same variant for NVIDIA GPUs (emitted here; running needs a GPU, see bench/gpu) =="
for chip in sm_80 sm_90a; do
  ptx=$("$BUILD_DIR/bin/attnc" emit examples/sliding_sink.attn --stage=ptx --target "$chip" --head-dim 128)
  echo "$chip: $(printf '%s\n' "$ptx" | wc -l) lines of PTX;" \
    "mma.sync: $(printf '%s\n' "$ptx" | grep -c 'mma.sync.aligned' || true)," \
    "wgmma.mma_async: $(printf '%s\n' "$ptx" | grep -c 'wgmma.mma_async' || true)," \
    "TMA loads: $(printf '%s\n' "$ptx" | grep -c 'cp.async.bulk.tensor' || true)"
done

echo
echo "== and for AMD CDNA GPUs (a linked code object; running needs an AMD GPU and ROCm) =="
for chip in gfx90a gfx942; do
  isa=$("$BUILD_DIR/bin/attnc" emit examples/sliding_sink.attn --stage=amdgcn --target "$chip" --head-dim 128)
  echo "$chip: $(printf '%s\n' "$isa" | wc -l) lines of assembly;" \
    "MFMA: $(printf '%s\n' "$isa" | grep -c 'v_mfma' || true)," \
    "VGPRs: $(printf '%s\n' "$isa" | grep -m1 '\.vgpr_count:' | awk '{print $2}')," \
    "scratch bytes: $(printf '%s\n' "$isa" | grep -m1 '\.private_segment_fixed_size:' | awk '{print $2}')"
done
