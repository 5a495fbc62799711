#!/usr/bin/env bash
# Fresh machine to test results: installs, builds, runs every test (lit,
# unit, numerics) through ctest, which closes with the passed/failed count.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
cd "$BUILD_DIR"
ctest --output-on-failure -j2
