#!/usr/bin/env bash
# Configures and builds attnc into ./build (clang-22 + lld, Release).
# BUILD_DIR picks another tree, CMAKE_ARGS adds configure options (e.g.
# -DATTNC_SANITIZE=ON) and BUILD_TARGET builds one target instead of all.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # shellcheck disable=SC2086 # CMAKE_ARGS is a list of options
  cmake -G Ninja -S . -B "$BUILD_DIR" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DLLVM_USE_LINKER=lld \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir ${CMAKE_ARGS:-}
fi
cmake --build "$BUILD_DIR" ${BUILD_TARGET:+--target "$BUILD_TARGET"}
