#!/usr/bin/env bash
# Installs attnc from BUILD into a fresh prefix, builds examples/host as a
# separate project against it, runs it, and checks that attnrt links no
# LLVM or MLIR.
set -euo pipefail
BUILD=$1 SRC=$2 WORK=$3
rm -rf "$WORK" && mkdir -p "$WORK"
cmake --install "$BUILD" --prefix "$WORK/install" > "$WORK/install.log"
needed=$(llvm-readelf-22 -d "$WORK/install/lib/libattnrt.so" 2>/dev/null ||
         readelf -d "$WORK/install/lib/libattnrt.so")
echo "$needed" | grep NEEDED
if echo "$needed" | grep -Ei 'NEEDED.*(llvm|mlir)'; then
  echo "FAIL: libattnrt.so depends on LLVM/MLIR"; exit 1
fi
# docs/guide.md's first steps with nothing but the install tree's bin/ on
# PATH: attnc and attn-npy (which the guide uses) are both installed.
(
  export PATH="$WORK/install/bin:/usr/bin:/bin"
  cd "$WORK" && mkdir -p guide && cd guide
  attn-npy rand q.npy f32 1,8,100,64 1
  attn-npy rand k.npy f32 1,2,100,64 2
  attn-npy rand v.npy f32 1,2,100,64 3
  ATTNC_CACHE_DIR=off attnc run "$SRC/examples/alibi.attn" --q q.npy \
    --k k.npy --v v.npy -o o.npy --lse-out lse.npy
  attn-npy check "$SRC/examples/alibi.attn" --q q.npy --k k.npy --v v.npy \
    --o o.npy --lse lse.npy | grep '^OK'
)
cmake -S "$SRC/examples/host" -B "$WORK/host" -G Ninja \
  -DCMAKE_CXX_COMPILER=clang++-22 -DCMAKE_PREFIX_PATH="$WORK/install" > "$WORK/configure.log"
cmake --build "$WORK/host" > "$WORK/build.log"
cd "$WORK/host"
./run_bundle
ATTNC_CACHE_DIR="$WORK/cache" ./host_example
echo "install-tree consumer OK"
