#!/usr/bin/env bash
# Validate the turbo KV-cache types on Apple hardware (Metal). Run it on a Mac with Xcode
# (or its command-line tools), CMake, Python 3.10+ and network access to PyPI, from any
# directory:
#
#   ci/metal-check.sh            # results in metal-check-<date>/, ~30-60 min on an M-series Mac
#   OUT=dir ci/metal-check.sh    # results in dir/
#
# What it does, stopping at the first failure:
#   1. builds the tools and test-backend-ops with `tqllama build --backend metal --tests`;
#   2. runs test-backend-ops on the Metal device for the turbo cases of SET_ROWS, GET_ROWS,
#      CPY and FLASH_ATTN_EXT that Metal implements (results against the CPU backend): every
#      case must pass, and none may be reported unsupported (a CPU fallback, not a kernel);
#   3. runs the KL-divergence sweep on SmolLM2-135M (wikitext-2, against the f16 cache of
#      the same build) for f16, q8_0, q4_0, turbo4, turbo3, turbo4-K/turbo3-V and
#      q8_0-K/turbo3-V, and the trellis turbo3t, turbo4-K/turbo3t-V and turbo2t, with
#      llama-bench at KV depths 0 and 4096;
#   4. prints the table (tqllama bench table) and keeps every log under $OUT.
# Send $OUT/summary.md back: it is what the README's Metal section needs.
set -euo pipefail

cd "$(dirname "$0")/.."
if [[ "$(uname -s)" != Darwin ]]; then
    echo "ci/metal-check.sh: Metal needs macOS; on Linux, \`make test\` runs the checks that can run there" >&2
    exit 1
fi

OUT=${OUT:-metal-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

make venv
TQ=.venv/bin/tqllama

echo "== 1. build (Metal, with test-backend-ops)"
"$TQ" build --backend metal --tests 2>&1 | tee "$OUT/build.txt"
BACKEND_OPS=$("$TQ" bin test-backend-ops --backend metal)

echo "== 2. test-backend-ops: turbo cases on MTL0 against the CPU"
# the cases of the conversions Metal implements (as for q8_0: F32 -> turbo, turbo -> F32
# or F16; F16 sources and turbo -> turbo are not among them), every flash-attention pair
# (macOS's own bash is 3.2: no associative arrays)
cases() {
    case "$1" in
        SET_ROWS)       echo 'type_src=f32,type_dst=turbo' ;;
        GET_ROWS)       echo 'type=turbo' ;;
        CPY)            echo 'type_src=f32,type_dst=turbo|type_src=turbo[0-9]t?,type_dst=f(32|16),' ;;
        FLASH_ATTN_EXT) echo 'type_K=turbo|type_V=turbo' ;;
    esac
}
for op in SET_ROWS GET_ROWS CPY FLASH_ATTN_EXT; do
    log="$OUT/test-backend-ops-$op.txt"
    "$BACKEND_OPS" test -b MTL0 -o "$op" -p "$(cases "$op")" 2>&1 | tee "$log"
    if grep -q 'not supported' "$log"; then
        echo "ci/metal-check.sh: $op: turbo cases the Metal backend does not support (see $log)" >&2
        exit 1
    fi
    # test-backend-ops ends a device with "  N/M tests passed"
    counts=$(sed -n 's/^ *\([0-9]*\)\/\([0-9]*\) tests passed.*/\1 \2/p' "$log" | tail -1)
    read -r passed total <<< "${counts:-0 0}"
    if [[ "$total" -eq 0 || "$passed" -ne "$total" ]]; then
        echo "ci/metal-check.sh: $op: $passed of $total turbo cases passed (see $log)" >&2
        exit 1
    fi
    echo "$op: $passed/$total turbo cases passed" | tee -a "$OUT/summary.md"
done

echo "== 3. KL divergence and speed on SmolLM2-135M"
"$TQ" bench sweep --backend metal --out "$OUT/sweep" --chunks 32 --depths 0,4096 \
    --cache f16/f16 --cache q8_0/q8_0 --cache q4_0/q4_0 \
    --cache turbo4/turbo4 --cache turbo3/turbo3 \
    --cache turbo4/turbo3 --cache q8_0/turbo3 \
    --cache turbo3t/turbo3t --cache turbo4/turbo3t --cache turbo2t/turbo2t 2>&1 | tee "$OUT/sweep.txt"

echo "== 4. table"
{
    echo
    echo "device: $(sysctl -n machdep.cpu.brand_string 2>/dev/null || uname -m), macOS $(sw_vers -productVersion)"
    echo
    "$TQ" bench table "$OUT/sweep"
} | tee -a "$OUT/summary.md"
echo "ci/metal-check.sh: all checks passed; results in $OUT (summary: $OUT/summary.md)"
