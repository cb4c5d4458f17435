#!/usr/bin/env bash
# tqllama CUDA device check (the bars of the issue "CUDA on a real GPU"), on a machine with an
# NVIDIA GPU. It needs no network: give it a build made elsewhere (BIN, see ci/pack-build.sh),
# or let it build here with `tqllama build --backend cuda --tests` (TQ_SRC for a machine
# that cannot download the pinned sdist). It
#   1. runs test-backend-ops on CUDA0 against the CPU: every turbo case of SET_ROWS, GET_ROWS,
#      CPY, FLASH_ATTN_EXT (the trellis types turbo2t and turbo3t among them, counted on their
#      own too: some must have run) and every MUL_MAT_SIGNED_HADAMARD case (the turbo
#      rotation) passes;
#   2. measures KLD on SmolLM2 against the f16 cache of the same device (-c 512), on the GPU
#      and on the CPU of the same binary (-dev none), for q8_0, q4_0, turbo4, turbo5, turbo3t
#      and turbo2t; GPU within 5% of the CPU, or the diagnosis rows say whose the gap is: q8_0
#      without upstream's rotation (LLAMA_ATTN_ROT_DISABLE=1), the f16 cache without flash
#      attention against the f16 base (the flash-attention kernel's own error), and, with
#      UPSTREAM_BIN (a CUDA build of the unpatched pinned tree), upstream's q8_0 and q4_0
#      measured the same way;
#   3. runs llama-bench -p 512 -n 128 at depths 0, 8192, 32768 for f16, q8_0, q4_0, turbo4,
#      turbo3, q8_0/turbo4, turbo4/turbo3, turbo3t (reported, no bar yet) and checks the speed
#      bars (ratios in one sitting):
#      tg128 @ d32768 turbo4 >= 1.0x q8_0 and >= 0.9x f16, tg128 @ d0 turbo4 >= 0.9x q8_0,
#      q8_0/turbo4 >= 1.0x q8_0 at d32768, pp512 @ d32768 turbo4 >= 0.9x q8_0;
#   4. checks that the mixed pairs q8_0/turbo4, turbo4/turbo3 and turbo5/turbo4 and the trellis pair
#      turbo3t/turbo3t run whole on the GPU (as many graph splits as q8_0/q8_0), and that a
#      pair this build has no kernel for (turbo4/q4_0) is named in one warning line instead
#      of falling back to the CPU silently.
# Prints one table and PASS/FAIL per bar; exit status 0 only when every bar holds.
#
# Environment: BIN (a directory with the tools and their libraries), UPSTREAM_BIN (optional),
# CUDA_ARCH (default 90, for the build here), MODEL (SmolLM2-135M-Instruct Q4_1 GGUF), TEXT
# (wikitext-2 test file), CHUNKS (KLD chunks of 512 tokens, default 16), REPS (llama-bench
# repetitions, default 2), OUT (work dir), TQLLAMA (the tqllama command), TQ_SRC.
set -euo pipefail

cd "$(dirname "$0")/.."
CUDA_ARCH=${CUDA_ARCH:-90}
MODEL=${MODEL:-$HOME/.cache/tqllama/models/SmolLM2-135M-Instruct.Q4_1.gguf}
TEXT=${TEXT:-../shared/data/wikitext-2-raw/wiki.test.raw}
CHUNKS=${CHUNKS:-16}
REPS=${REPS:-2}
OUT=${OUT:-$(mktemp -d /tmp/tqllama-cuda-check.XXXXXX)}
TQLLAMA=${TQLLAMA:-tqllama}

mkdir -p "$OUT"
for f in "$MODEL" "$TEXT"; do
    [[ -f $f ]] || { echo "cuda-check: $f not found (set MODEL / TEXT)" >&2; exit 2; }
done
for d in ${BIN:+"$BIN"} ${UPSTREAM_BIN:+"$UPSTREAM_BIN"}; do
    [[ -x $d/llama-perplexity ]] || { echo "cuda-check: no llama-perplexity in $d (BIN / UPSTREAM_BIN: a directory of tools, see ci/pack-build.sh)" >&2; exit 2; }
done
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
started=$SECONDS
trap 'echo "cuda-check: failed at line $LINENO; logs in $OUT" >&2' ERR
phase() { echo "== $1 ($((SECONDS - started)) s)"; }

if [[ -z ${BIN:-} ]]; then
    phase "build (CUDA, sm_$CUDA_ARCH, with test tools)"
    src_args=()
    [[ -n ${TQ_SRC:-} ]] && src_args=(--src "$TQ_SRC")
    $TQLLAMA build --backend cuda --cuda-arch "$CUDA_ARCH" --tests "${src_args[@]}" > "$OUT/build.txt"
    BIN=$(dirname "$($TQLLAMA bin llama-perplexity --backend cuda)")
fi
# cuBLAS: the toolkit's, or the nvidia-cublas wheel of any Python here (PyTorch's included)
cublas=$(find /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu /opt /usr/local/lib /root -name 'libcublas.so.1*' 2>/dev/null | head -1 || true)
export LD_LIBRARY_PATH=${BIN}${cublas:+:$(dirname "$cublas")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ldd "$BIN/llama-perplexity" | grep -q "not found"; then
    ldd "$BIN/llama-perplexity" | grep "not found" >&2
    echo "cuda-check: libraries missing (above): put them in $BIN or on LD_LIBRARY_PATH" >&2
    exit 2
fi

phase "test-backend-ops on CUDA0: turbo cases, signed Hadamard rotation"
tbo_ok=1
tbo() { # tbo NAME ARGS...: run, strip colours, count OK/FAIL per op
    local name=$1 rc=0
    shift
    "$BIN/test-backend-ops" test -b CUDA0 "$@" > "$OUT/tbo-$name.txt" 2>&1 || rc=$?
    sed -i 's/\x1b\[[0-9;]*m//g' "$OUT/tbo-$name.txt"
    (( rc == 0 )) || tbo_ok=0
}
tbo turbo -o SET_ROWS,GET_ROWS,CPY,FLASH_ATTN_EXT -p turbo
tbo rotation -o MUL_MAT_SIGNED_HADAMARD
for op in SET_ROWS GET_ROWS CPY FLASH_ATTN_EXT MUL_MAT_SIGNED_HADAMARD; do
    pass=$(cat "$OUT"/tbo-*.txt | grep -cE "^  $op\(.*OK$" || true)
    fail=$(cat "$OUT"/tbo-*.txt | grep -cE "^  $op\(.*FAIL$" || true)
    echo "$op: $pass passed, $fail failed"
    if (( fail > 0 || pass == 0 )); then tbo_ok=0; fi
done
for op in SET_ROWS GET_ROWS CPY FLASH_ATTN_EXT; do # the trellis cases: they ran on CUDA0 (supports_op)
    pass=$(grep -cE "^  $op\(.*turbo[23]t.*OK$" "$OUT/tbo-turbo.txt" || true)
    fail=$(grep -cE "^  $op\(.*turbo[23]t.*FAIL$" "$OUT/tbo-turbo.txt" || true)
    echo "$op (turbo2t, turbo3t): $pass passed, $fail failed"
    if (( fail > 0 || pass == 0 )); then tbo_ok=0; fi
done

phase "KLD, -c 512 --chunks $CHUNKS: GPU and CPU, each against its own f16 cache"
kld() { # kld NAME BIN BASE CTK CTV [args]: mean KLD against BASE's logits
    local name=$1 bin=$2 base=$3 ctk=$4 ctv=$5
    shift 5
    "$bin/llama-perplexity" -m "$MODEL" -f "$TEXT" -c 512 --chunks "$CHUNKS" -ctk "$ctk" -ctv "$ctv" \
        --kl-divergence-base "$base" --kl-divergence "$@" > "$OUT/kld-$name.txt" 2>&1
    echo "$name=$(awk '/^Mean +KLD:/ {print $3}' "$OUT/kld-$name.txt")" >> "$OUT/kld.txt"
}
base() { # base BIN FILE [args]: the f16 cache's logits
    local bin=$1 file=$2
    shift 2
    "$bin/llama-perplexity" -m "$MODEL" -f "$TEXT" -c 512 --chunks "$CHUNKS" \
        --kl-divergence-base "$file" "$@" > "$file.txt" 2>&1
}
: > "$OUT/kld.txt"
base "$BIN" "$OUT/base-gpu.kld" -fa on -ngl 99
base "$BIN" "$OUT/base-cpu.kld" -fa on -dev none
for t in q8_0 q4_0 turbo4 turbo5 turbo3t turbo2t; do
    kld "gpu-$t" "$BIN" "$OUT/base-gpu.kld" "$t" "$t" -fa on -ngl 99
    kld "cpu-$t" "$BIN" "$OUT/base-cpu.kld" "$t" "$t" -fa on -dev none
done
LLAMA_ATTN_ROT_DISABLE=1 kld gpu-q8_0-norot "$BIN" "$OUT/base-gpu.kld" q8_0 q8_0 -fa on -ngl 99
kld gpu-f16-fa-off "$BIN" "$OUT/base-gpu.kld" f16 f16 -fa off -ngl 99
kld cpu-f16-fa-off "$BIN" "$OUT/base-cpu.kld" f16 f16 -fa off -dev none
if [[ -n ${UPSTREAM_BIN:-} ]]; then
    base "$UPSTREAM_BIN" "$OUT/base-upstream-gpu.kld" -fa on -ngl 99
    base "$UPSTREAM_BIN" "$OUT/base-upstream-cpu.kld" -fa on -dev none
    for t in q8_0 q4_0; do
        kld "upstream-gpu-$t" "$UPSTREAM_BIN" "$OUT/base-upstream-gpu.kld" "$t" "$t" -fa on -ngl 99
        kld "upstream-cpu-$t" "$UPSTREAM_BIN" "$OUT/base-upstream-cpu.kld" "$t" "$t" -fa on -dev none
    done
fi

phase "mixed pairs: graph splits, and the warning for a pair without a CUDA kernel"
splits() { # splits CTK CTV: the graph splits llama.cpp reports for that pair on the GPU
    "$BIN/llama-perplexity" -m "$MODEL" -f "$TEXT" -c 512 --chunks 1 -fa on -ngl 99 -ctk "$1" -ctv "$2" \
        > "$OUT/splits-$1-$2.txt" 2>&1
    sed -n 's/.*sched_reserve: graph.*splits = \([0-9]*\).*/\1/p' "$OUT/splits-$1-$2.txt" | head -1
}
{
    echo "splits-q8_0=$(splits q8_0 q8_0)"
    echo "splits-q8_0-turbo4=$(splits q8_0 turbo4)"
    echo "splits-turbo4-turbo3=$(splits turbo4 turbo3)"
    echo "splits-turbo5-turbo4=$(splits turbo5 turbo4)"
    echo "splits-turbo3t-turbo3t=$(splits turbo3t turbo3t)"
    splits turbo4 q4_0 > /dev/null
    echo "warned-turbo4-q4_0=$(grep -c "Flash Attention is on, but layer" "$OUT/splits-turbo4-q4_0.txt" || true)"
} > "$OUT/splits.txt"

phase "llama-bench pp512 / tg128 at depths 0, 8192, 32768"
: > "$OUT/bench.jsonl"
for p in f16/f16 q8_0/q8_0 q4_0/q4_0 turbo4/turbo4 turbo3/turbo3 q8_0/turbo4 turbo4/turbo3 turbo3t/turbo3t; do
    "$BIN/llama-bench" -m "$MODEL" -ngl 99 -fa 1 -ctk "${p%/*}" -ctv "${p#*/}" -p 512 -n 128 \
        -d 0,8192,32768 -r "$REPS" -o jsonl >> "$OUT/bench.jsonl" 2> "$OUT/bench-${p/\//-}.log"
done

phase "table"
rc=0
python3 - "$OUT" "$tbo_ok" <<'EOF' || rc=$?
import json, sys
from pathlib import Path

out, tbo_ok = Path(sys.argv[1]), sys.argv[2] == "1"
def pairs(name):
    return dict(line.strip().split("=", 1) for line in (out / name).read_text().splitlines() if "=" in line)
kld = {k: float(v) if v else float("nan") for k, v in pairs("kld.txt").items()}
split = pairs("splits.txt")
ts = {}  # (pair, test, depth) -> tokens/s
for line in (out / "bench.jsonl").read_text().splitlines():
    r = json.loads(line)
    test = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
    ts[(f"{r['type_k']}/{r['type_v']}", test, r["n_depth"])] = r["avg_ts"]

cols = [(test, d) for test in ("pp512", "tg128") for d in (0, 8192, 32768)]
print("| K/V | " + " | ".join(f"{t} @ d{d}" for t, d in cols) + " |")
print("|---|" + "---|" * len(cols))
for p in dict.fromkeys(k[0] for k in ts):
    print(f"| {p} | " + " | ".join(f"{ts.get((p, t, d), float('nan')):.1f}" for t, d in cols) + " |")
print()
print("| KLD vs own f16 cache | GPU | CPU | GPU / CPU |")
print("|---|---|---|---|")
rows = [(name, kld.get(f"gpu-{name}"), kld.get(f"cpu-{name}"))
        for name in ("q8_0", "q4_0", "turbo4", "turbo5", "turbo3t", "turbo2t", "f16-fa-off")]
rows += [(f"upstream {t}", kld.get(f"upstream-gpu-{t}"), kld.get(f"upstream-cpu-{t}"))
         for t in ("q8_0", "q4_0")]
for name, g, c in rows:
    if g is not None and c is not None:
        print(f"| {name} | {g:.6f} | {c:.6f} | {g / c:.2f} |")
print(f"| q8_0 without rotation (LLAMA_ATTN_ROT_DISABLE=1) | {kld.get('gpu-q8_0-norot', float('nan')):.6f} | | |")

def r(a, b, test, d):
    x, y = ts.get((a, test, d)), ts.get((b, test, d))
    return x / y if x and y else float("nan")

checks = [("test-backend-ops: every turbo (trellis too) and signed-Hadamard case passes on CUDA0", tbo_ok)]
for t in ("q8_0", "q4_0", "turbo4", "turbo5", "turbo3t", "turbo2t"):
    rel = abs(kld[f"gpu-{t}"] / kld[f"cpu-{t}"] - 1)
    checks.append((f"{t} KLD GPU within 5% of the CPU: {rel:.1%}", rel <= 0.05))
bars = [("turbo4/turbo4", "q8_0/q8_0", "tg128", 32768, 1.0), ("turbo4/turbo4", "f16/f16", "tg128", 32768, 0.9),
        ("turbo4/turbo4", "q8_0/q8_0", "tg128", 0, 0.9), ("q8_0/turbo4", "q8_0/q8_0", "tg128", 32768, 1.0),
        ("turbo4/turbo4", "q8_0/q8_0", "pp512", 32768, 0.9)]
for a, b, test, d, bar in bars:
    x = r(a, b, test, d)
    checks.append((f"{test} @ d{d} {a} / {b} = {x:.3f} >= {bar}", x >= bar))
for p in ("q8_0-turbo4", "turbo4-turbo3", "turbo5-turbo4", "turbo3t-turbo3t"):
    checks.append((f"{p.replace('-', '/')} runs whole on the GPU: {split[f'splits-{p}']} splits "
                   f"(q8_0/q8_0: {split['splits-q8_0']})", split[f"splits-{p}"] == split["splits-q8_0"]))
checks.append(("turbo4/q4_0 (no CUDA kernel) is named in one warning line",
               split["warned-turbo4-q4_0"] == "1"))
print()
for text, ok in checks:
    print(f"{'PASS' if ok else 'FAIL'}  {text}")
sys.exit(0 if all(ok for _, ok in checks) else 1)
EOF
phase "done: logs in $OUT"
exit $rc
