#!/usr/bin/env bash
# Installs the Debian packages attnc builds and tests with (DESIGN.md).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  cmake ninja-build clang-22 lld-22 llvm-22-dev llvm-22-tools \
  libmlir-22-dev mlir-22-tools libfmt-dev googletest libgtest-dev \
  libclang-rt-22-dev nlohmann-json3-dev \
  python3 python3-numpy python3-torch ca-certificates >/dev/null
