#!/usr/bin/env bash
# Checks the AArch64 NEON path of the turbo CPU kernels on an x86 machine: cross-builds
# libggml-base for aarch64 from a patched tree and runs tests/c/turbo_kernels.c under
# qemu-user, with and without the dot-product extension (the generic and NEON kernel files
# compiled into the test program).
#   needs: gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
#   usage: scripts/check_neon.sh [PATCHED_TREE]   (default: the tree of `tqllama build`)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tree=${1:-${TQLLAMA_CACHE:-$HOME/.cache/tqllama}/build/cpu/src}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cmake -S "$tree" -B "$out/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ \
  -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > "$out/configure.log"
cmake --build "$out/build" --target ggml-base ggml-cpu > "$out/build.log"

lib=$out/build/bin
src=$tree/ggml
for arch in armv8.2-a+dotprod armv8-a; do
  aarch64-linux-gnu-gcc -O2 -std=gnu11 -ffp-contract=off -march=$arch -I "$src/src" -I "$src/src/ggml-cpu" \
    -I "$src/include" "$here/tests/c/turbo_kernels.c" "$src/src/ggml-cpu/turbo-cpu.c" \
    "$src/src/ggml-cpu/arch/arm/turbo-cpu.c" "$src/src/ggml-cpu/trellis-cpu.c" -L "$lib" -lggml-cpu -lggml-base -lm -o "$out/k"
  echo -n "-march=$arch: "
  QEMU_LD_PREFIX=/usr/aarch64-linux-gnu LD_LIBRARY_PATH=$lib qemu-aarch64 "$out/k"
done
