#!/usr/bin/env bash
# Pack a build of tqllama for another machine, typically a GPU machine that cannot build or
# download anything: the tools of `tqllama build --backend B --tests` and their ggml/llama
# libraries under their sonames, in one folder (the tools look for libraries beside
# themselves: $ORIGIN), stripped, as one .tar.xz. On the GPU machine:
# `tar -xJf FILE -C DIR` and `BIN=DIR/tqllama-cuda ci/cuda-check.sh` (cuBLAS and the CUDA
# runtime come from that machine).
#
# usage: ci/pack-build.sh [OUTPUT.tar.xz]   (default: tqllama-$BACKEND.tar.xz)
# Environment: BACKEND (default cuda), TQLLAMA (the tqllama command).
set -euo pipefail

BACKEND=${BACKEND:-cuda}
out=${1:-tqllama-$BACKEND.tar.xz}
TQLLAMA=${TQLLAMA:-tqllama}
bin=$(dirname "$($TQLLAMA bin llama-perplexity --backend "$BACKEND")")
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dest=$stage/tqllama-$BACKEND
mkdir -p "$dest"

for tool in llama-server llama-cli llama-perplexity llama-bench test-backend-ops; do
    [[ -x $bin/$tool ]] || { echo "pack-build: $bin/$tool missing: run \`$TQLLAMA build --backend $BACKEND --tests\`" >&2; exit 2; }
    cp "$bin/$tool" "$dest/"
done
# each library once, under the name the tools ask for (libggml-base.so.0, libllama.so.0, ...)
for lib in "$bin"/lib*.so*; do
    [[ -L $lib ]] && continue
    soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
    cp "$lib" "$dest/${soname:-$(basename "$lib")}"
done
strip --strip-unneeded "$dest"/* 2>/dev/null || true
tar -C "$stage" -cf - "tqllama-$BACKEND" | xz -9 -T0 > "$out"
echo "$out: $(du -h "$out" | cut -f1)"
