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
cmake -S "$SRC/examples/host" -B "$WORK/host" -G Ninja \
  -DCMAKE_CXX_COMPILER=clang++-22 -DCMAKE_PREFIX_PATH="$WORK/install" > "$WORK/configure.log"
cmake --build "$WORK/host" > "$WORK/build.log"
cd "$WORK/host"
./run_bundle
ATTNC_CACHE_DIR="$WORK/cache" ./host_example
echo "install-tree consumer OK"
