"""The turbo and trellis CUDA device code, run on the CPU: no GPU needed.

ggml-cuda/turbo.cuh and turbo-warp.cuh (the quantizer of SET_ROWS and CPY, the _qjl
dequantizer, the flash-attention vec kernel's K dot product and V dequantization, the
query's QJL projection), and ggml-cuda/trellis.cuh and trellis-warp.cuh (the same for
turbo2t and turbo3t: the Viterbi quantizer with its shared-memory scratch, the window
decoder) compile as plain C++ against tests/cuda/shim, which runs a warp as 32 cooperative
fibers with the documented semantics of every intrinsic they use (tests/emu/lane_fibers.h,
tests/cuda/warp_runtime.h, warp_emu.h, turbo_warp_emu.cpp and trellis_warp_emu.cpp say
how). What they compute is compared with the NumPy reference: quantization byte for byte,
dequantization value for value, the K dot product to float rounding. The trellis quantizer
runs with the lanes in both orders, so that a shared-memory read without the __syncwarp
before it shows.
What this cannot see is the hardware: the launch geometry, memory ordering,
-use_fast_math's flushing of float32 subnormals; ci/cuda-check.sh on a GPU does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tqlab.bitexact import (
    TURBO,
    adversarial_rows,
    boundary_rows,
    random_rows,
    reference,
    stage1_bits,
    tie_rows,
    trellis_edge_rows,
    trellis_rows,
)
from tqllama.quant import qjl, tables
from tqllama.quant.trellis import TYPES as TRELLIS
from tqllama.quant.trellis import TrellisQuant

pytestmark = pytest.mark.slow  # the patched tree (for ggml.h), a 10 s compile

HERE = Path(__file__).parent
PLAIN = [t for t in TURBO if not t.endswith("_qjl")]
# emulator -> (the ggml/src headers, the ggml-cuda headers) it compiles
EMULATORS = {
    "turbo": (("ggml-turbo-common.h", "ggml-turbo-tables.h"), ("turbo.cuh", "turbo-warp.cuh")),
    "trellis": (("ggml-turbo-common.h", "ggml-turbo-tables.h", "ggml-trellis-common.h",
                 "ggml-trellis-tables.h"), ("turbo.cuh", "trellis.cuh", "trellis-warp.cuh")),
}


def build_emulator(tree: Path, dest: Path, edit: tuple[str, str, str] | None = None,
                   kind: str = "turbo") -> Path:
    """Compile tests/cuda/{kind}_warp_emu.cpp with the tree's headers beside the shim (so
    that their `#include "common.cuh"` finds it) and tests/emu (the lanes' fibers); `edit` =
    (header, old, new) changes a copy of one header first."""
    src = tree / "ggml" / "src"
    cuda = dest / "src" / "ggml-cuda"
    cuda.mkdir(parents=True)
    common, headers = EMULATORS[kind]
    for name in common:
        shutil.copy(src / name, cuda.parent / name)
    for name in headers:
        text = (src / "ggml-cuda" / name).read_text()
        if edit is not None and edit[0] == name:
            assert text.count(edit[1]) == 1, f"the edit point moved in {name}: update this test"
            text = text.replace(edit[1], edit[2])
        (cuda / name).write_text(text)
    for shim in (HERE / "cuda" / "shim").iterdir():
        shutil.copy(shim, cuda / shim.name)
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("no g++")
    exe = dest / f"{kind}_warp_emu"
    subprocess.run(
        [gxx, "-std=c++17", "-O2", "-ffp-contract=off", "-Wall", "-Werror",
         "-Wno-unknown-pragmas", "-I", str(cuda), "-I", str(HERE / "emu"),
         "-I", str(tree / "ggml" / "include"),
         str(HERE / "cuda" / f"{kind}_warp_emu.cpp"), "-o", str(exe)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return exe


@pytest.fixture(scope="module")
def emulator(patched_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_emulator(patched_tree, tmp_path_factory.mktemp("emu"))


@pytest.fixture(scope="module")
def trellis_emulator(patched_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_emulator(patched_tree, tmp_path_factory.mktemp("emu"), kind="trellis")


def run(exe: Path, name: str, mode: str, data: bytes, *args: object,
        lanes: str = "forward") -> bytes:
    env = {**os.environ, "TURBO_EMU_LANES": lanes}
    proc = subprocess.run([str(exe), name, mode, *map(str, args)], input=data,
                          capture_output=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return proc.stdout


def first_bad_block(got: bytes, want: bytes, size: int) -> str:
    bad = next(i for i in range(0, len(want), size) if got[i:i + size] != want[i:i + size])
    return f"block {bad // size}: {got[bad:bad + size].hex()} != {want[bad:bad + size].hex()}"


@pytest.mark.parametrize("name", list(TURBO))
def test_quantize_matches_reference(emulator: Path, name: str) -> None:
    """SET_ROWS / CPY F32 -> turbo: the reference's bytes, on the rows where another float
    order, tie rule or scale search would show."""
    bits = stage1_bits(name)
    ref = reference(name)
    rng = np.random.default_rng(500 + TURBO[name])
    for rows in (random_rows(rng, 300, 128), adversarial_rows(rng), tie_rows(bits)[::4],
                 boundary_rows(bits, rng)):
        got = run(emulator, name, "q", rows.tobytes())
        want = ref.quantize(rows)
        assert len(got) == len(want)
        if got != want:
            pytest.fail(f"{name} {first_bad_block(got, want, ref.block_bytes)}")


def some_blocks(name: str, rng: np.random.Generator) -> bytes:
    """Quantized rows, then random bytes (every scale field decodes; a _qjl norm is any
    finite fp16, as ggml's row validation lets through)."""
    ref = reference(name)
    noise = rng.integers(0, 256, size=(1000, ref.block_bytes), dtype=np.uint8)
    if name.endswith("_qjl"):
        rn = slice(ref.block_bytes - 10, ref.block_bytes - 8)
        norms = np.abs(rng.standard_normal(1000) * 100).astype("<f2")
        noise[:, rn] = norms.view(np.uint8).reshape(-1, 2)
    return ref.quantize(random_rows(rng, 300, 64)) + noise.tobytes()


@pytest.mark.parametrize("name", list(TURBO))
def test_dequantize_matches_reference(emulator: Path, name: str) -> None:
    """The converters, GET_ROWS and CPY -> F32: dequantize_turbo for the plain types, the
    warp dequantizer (a value needs its whole block) for the _qjl types."""
    data = some_blocks(name, np.random.default_rng(600 + TURBO[name]))
    ref = reference(name)
    n = len(data) // ref.block_bytes * 64
    got = np.frombuffer(run(emulator, name, "d", data), dtype=np.float32)
    np.testing.assert_array_equal(got, ref.dequantize(data, n))


@pytest.mark.parametrize("mode", ["v2", "v4"])
@pytest.mark.parametrize("name", PLAIN)
def test_dequantize_V_matches_reference(emulator: Path, name: str, mode: str) -> None:
    """The flash-attention vec kernel's V values, 2 or 4 per call."""
    data = some_blocks(name, np.random.default_rng(700 + TURBO[name]))
    n = len(data) // reference(name).block_bytes * 64
    got = np.frombuffer(run(emulator, name, mode, data), dtype=np.float32)
    np.testing.assert_array_equal(got, reference(name).dequantize(data, n))


def q8_1(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vec kernel's query as q8_1, per 32 values: (integers, d) as float64."""
    v = v.astype(np.float32).reshape(-1, 32)
    d = (np.abs(v).max(axis=1) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (v / d[:, None]).astype(np.float64)
    q = np.where(x >= 0, np.floor(x + 0.5), np.ceil(x - 0.5))  # roundf: half away from 0
    q[d == 0] = 0
    return q, d.astype(np.float64)


@pytest.mark.parametrize("head", [64, 128, 256])
@pytest.mark.parametrize("name", list(TURBO))
def test_fa_vec_dot_matches_reference(emulator: Path, name: str, head: int) -> None:
    """K . (scale q) of the vec kernel: stage 1 against the q8_1 query, plus for _qjl keys
    g * <signs, P(scale q)> with the projection computed once per query. Exact arithmetic
    on the same q8_1 query differs from it by float rounding only; a wrong word, index,
    sign bit or scale would be off by far more than the 1e-6 allowed."""
    ref = reference(name)
    rng = np.random.default_rng(800 + head + TURBO[name])
    for scale in (1.0, 0.125):
        keys = random_rows(rng, 60, head)
        query = rng.standard_normal(head).astype(np.float32)
        kb = ref.quantize(keys)
        got = np.frombuffer(run(emulator, name, "dot", query.tobytes() + kb, head, scale),
                            dtype=np.float32)

        sq = (np.float32(scale) * query).astype(np.float32)
        qi, dq = q8_1(sq)
        q8 = (qi * dq[:, None]).reshape(-1)
        if isinstance(ref, qjl.TurboQuant):
            x_mse = ref.dequantize_mse(kb, keys.size).reshape(-1, head).astype(np.float64)
            _, _, norm16, signs = ref.decode_blocks(kb, keys.size)
            proj = qjl.project(sq.astype(np.float64).reshape(-1, 64)).reshape(head)
            g = np.repeat(norm16.astype(np.float64) * float(tables.qjl_scale()), 64)
            residual = (1.0 - 2.0 * signs.reshape(-1, head)) * g.reshape(-1, head) * proj
        else:
            x_mse = ref.dequantize(kb, keys.size).reshape(-1, head).astype(np.float64)
            residual = np.zeros_like(x_mse)
        terms = np.concatenate([x_mse * q8, residual], axis=1)
        want = terms.sum(axis=1)
        err = np.abs(got - want) / np.abs(terms).sum(axis=1)
        assert err.max() < 1e-6, f"scale {scale}: relative error {err.max():.2e}"


def test_a_wrong_butterfly_fails(patched_tree: Path, tmp_path: Path) -> None:
    """The comparison is real: one butterfly subtraction the other way round in the QJL
    projection changes the _qjl bytes."""
    edit = ("turbo.cuh", "__fsub_rn(o0, v0)", "__fsub_rn(v0, o0)")
    exe = build_emulator(patched_tree, tmp_path, edit)
    rows = random_rows(np.random.default_rng(9), 50, 64)
    assert run(exe, "turbo4_qjl", "q", rows.tobytes()) != reference("turbo4_qjl").quantize(rows)
    assert run(exe, "turbo4", "q", rows.tobytes()) == reference("turbo4").quantize(rows)


def test_a_divergent_shuffle_is_caught(patched_tree: Path, tmp_path: Path) -> None:
    """A warp-wide operation under a lane-dependent branch (undefined on a GPU with a full
    mask) stops the emulator with the names of the operations that diverged."""
    old = "    if (lane < 4) {\n        qr[lane]"
    edit = ("turbo-warp.cuh", old, old.replace("{\n", "{\n        turbo_cuda_hu64(r0, r1);\n"))
    exe = build_emulator(patched_tree, tmp_path, edit)
    rows = random_rows(np.random.default_rng(10), 1, 64)
    proc = subprocess.run([str(exe), "turbo3_qjl", "q"], input=rows.tobytes(),
                          capture_output=True, timeout=60)
    assert proc.returncode == 3
    assert b"diverged" in proc.stderr and b"__shfl_xor_sync" in proc.stderr


# ---- the trellis types (turbo2t, turbo3t) ------------------------------------------------


def trellis_row_sets(name: str) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(900 + TRELLIS[name].k)
    sets = [(f"random {w}", random_rows(rng, 240 // (w // 64), w)) for w in (64, 128, 192, 256)]
    return [*sets, ("format edges", trellis_rows(name, rng)),
            ("adversarial", adversarial_rows(rng)), ("edges", trellis_edge_rows(rng))]


@pytest.mark.parametrize("lanes", ["forward", "reverse"])
@pytest.mark.parametrize("name", list(TRELLIS))
def test_trellis_quantize_matches_reference(trellis_emulator: Path, name: str, lanes: str) -> None:
    """SET_ROWS / CPY F32 -> turbo2t / turbo3t: the reference's bytes on random rows of
    widths 64-256, blocks a path reconstructs exactly (ties at every Viterbi step), constant
    blocks on the mantissa boundaries, spikes over the amax floor, zeros, NaN/Inf and
    subnormals; the warp's lanes run in either order."""
    ref = TrellisQuant(name)
    for label, rows in trellis_row_sets(name):
        got = run(trellis_emulator, name, "q", rows.tobytes(), lanes=lanes)
        want = ref.quantize(rows)
        assert len(got) == len(want)
        if got != want:
            pytest.fail(f"{name} {label}: {first_bad_block(got, want, ref.block_bytes)}")


def trellis_blocks(name: str, rng: np.random.Generator) -> bytes:
    """Quantized rows, then random bytes: every bit string is a valid block (every scale
    code decodes to a finite scale, every state to a table entry)."""
    ref = TrellisQuant(name)
    noise = rng.integers(0, 256, size=(1000, ref.block_bytes), dtype=np.uint8)
    return ref.quantize(random_rows(rng, 300, 64)) + noise.tobytes()


@pytest.mark.parametrize("name", list(TRELLIS))
def test_trellis_dequantize_matches_reference(trellis_emulator: Path, name: str) -> None:
    """The converters, GET_ROWS and CPY -> F32: dequantize_trellis, value by value, each
    block alone in a buffer of its size."""
    data = trellis_blocks(name, np.random.default_rng(1000 + TRELLIS[name].k))
    ref = TrellisQuant(name)
    n = len(data) // ref.block_bytes * 64
    got = np.frombuffer(run(trellis_emulator, name, "d", data), dtype=np.float32)
    np.testing.assert_array_equal(got, ref.dequantize(data, n))


@pytest.mark.parametrize("mode", ["v2", "v4"])
@pytest.mark.parametrize("name", list(TRELLIS))
def test_trellis_dequantize_V_matches_reference(trellis_emulator: Path, name: str,
                                                mode: str) -> None:
    """The flash-attention vec kernel's V values, 2 or 4 per call (four windows from two or
    three bytes of the block)."""
    data = trellis_blocks(name, np.random.default_rng(1100 + TRELLIS[name].k))
    ref = TrellisQuant(name)
    n = len(data) // ref.block_bytes * 64
    got = np.frombuffer(run(trellis_emulator, name, mode, data), dtype=np.float32)
    np.testing.assert_array_equal(got, ref.dequantize(data, n))


@pytest.mark.parametrize("head", [64, 128, 256])
@pytest.mark.parametrize("name", list(TRELLIS))
def test_trellis_fa_vec_dot_matches_reference(trellis_emulator: Path, name: str, head: int) -> None:
    """K . (scale q) of the vec kernel against the q8_1 query: the reference's values times
    the q8_1 query, to float rounding (a wrong window, sign or scale is off by far more than
    the 1e-6 allowed)."""
    ref = TrellisQuant(name)
    rng = np.random.default_rng(1200 + head + TRELLIS[name].k)
    for scale in (1.0, 0.125):
        keys = random_rows(rng, 60, head)
        query = rng.standard_normal(head).astype(np.float32)
        kb = ref.quantize(keys)
        got = np.frombuffer(run(trellis_emulator, name, "dot", query.tobytes() + kb, head, scale),
                            dtype=np.float32)

        qi, dq = q8_1((np.float32(scale) * query).astype(np.float32))
        q8 = (qi * dq[:, None]).reshape(-1)
        terms = ref.dequantize(kb, keys.size).reshape(-1, head).astype(np.float64) * q8
        want = terms.sum(axis=1)
        err = np.abs(got - want) / np.abs(terms).sum(axis=1)
        assert err.max() < 1e-6, f"scale {scale}: relative error {err.max():.2e}"


def test_a_missing_syncwarp_fails(patched_tree: Path, tmp_path: Path) -> None:
    """The shared-memory emulation is real: without the __syncwarp between a Viterbi step's
    writes of the path errors and the reads of the predecessors, the lanes read stale errors
    and the bytes change."""
    old = "            Dt[WARP_SIZE*i + lane] = D[i];\n        }\n        __syncwarp();\n"
    edit = ("trellis-warp.cuh", old, old.replace("        __syncwarp();\n", ""))
    exe = build_emulator(patched_tree, tmp_path, edit, kind="trellis")
    rows = random_rows(np.random.default_rng(12), 20, 64)
    assert run(exe, "turbo3t", "q", rows.tobytes()) != TrellisQuant("turbo3t").quantize(rows)
