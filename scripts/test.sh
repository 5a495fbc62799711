#!/usr/bin/env bash
# Fresh machine to test results: installs, builds, runs every test (lit,
# unit, numerics, simulated GPUs) through ctest, which closes with the
# passed/failed count; then the sanitized build (ASan + UBSan, with the
# libFuzzer targets) runs its label set and the fuzz smoke tests
# (docs/hardening.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
(cd "$BUILD_DIR" && ctest --output-on-failure -j2)
SANITIZE_DIR=${SANITIZE_DIR:-build-asan}
BUILD_DIR=$SANITIZE_DIR CMAKE_ARGS="-DATTNC_FUZZ=ON" \
  BUILD_TARGET=attn-sanitize-tests bash scripts/build.sh
cd "$SANITIZE_DIR"
ctest --output-on-failure -j2 -L 'sanitize|fuzz'
