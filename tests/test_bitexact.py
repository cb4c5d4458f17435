"""The C quantizers of the built llama.cpp and the NumPy reference agree byte for byte."""

from __future__ import annotations

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
from tqlab.ggmllib import GgmlBase, GgmlCpu
from tqllama.quant import baselines
from tqllama.quant.trellis import TYPES as TRELLIS
from tqllama.quant.trellis import TrellisQuant

pytestmark = pytest.mark.slow

@pytest.mark.parametrize("name", list(TURBO))
@pytest.mark.parametrize("width", [64, 128, 256])
def test_random_rows_byte_exact(ggml: GgmlBase, name: str, width: int) -> None:
    rng = np.random.default_rng(width + TURBO[name])
    rows = random_rows(rng, 4000, width)
    c_bytes = ggml.quantize(name, rows)
    assert c_bytes == reference(name).quantize(rows)
    c_values = ggml.dequantize(name, c_bytes, rows.size)
    ref_values = reference(name).dequantize(c_bytes, rows.size)
    np.testing.assert_array_equal(c_values, ref_values)


@pytest.mark.parametrize("name", list(TURBO))
def test_adversarial_rows_byte_exact(ggml: GgmlBase, name: str) -> None:
    rows = adversarial_rows(np.random.default_rng(7))
    ref = reference(name)
    c_bytes = ggml.quantize(name, rows)
    for i in range(len(rows)):
        one = ggml.quantize(name, rows[i : i + 1])
        assert one == ref.quantize(rows[i : i + 1]), f"row {i} differs"
    values = ggml.dequantize(name, c_bytes, rows.size)
    assert np.all(np.isfinite(values))


@pytest.mark.parametrize("name", list(TURBO))
def test_cpu_quantizer_byte_exact(ggml: GgmlBase, ggml_cpu: GgmlCpu, name: str) -> None:
    """The CPU backend's from_float (SIMD where the machine has it) writes the reference's
    bytes, on the rows where a different float order or tie rule would show."""
    bits = stage1_bits(name)
    rng = np.random.default_rng(300 + bits)
    ref = reference(name)
    for rows in (random_rows(rng, 2000, 128), adversarial_rows(rng), tie_rows(bits),
                 boundary_rows(bits, rng)):
        want = ref.quantize(rows)
        assert ggml.quantize(name, rows) == want
        got = ggml_cpu.quantize(name, rows)
        if got != want:
            size = ref.block_bytes
            bad = next(i for i in range(0, len(want), size) if got[i:i + size] != want[i:i + size])
            pytest.fail(f"{name} block {bad // size}: {got[bad:bad + size].hex()} "
                        f"!= {want[bad:bad + size].hex()}")


def _first_bad_block(got: bytes, want: bytes, size: int) -> str:
    bad = next(i for i in range(0, len(want), size) if got[i:i + size] != want[i:i + size])
    return f"block {bad // size}: {got[bad:bad + size].hex()} != {want[bad:bad + size].hex()}"


@pytest.mark.parametrize("name", list(TRELLIS))
@pytest.mark.parametrize("width", [64, 128, 256])
def test_trellis_random_rows_byte_exact(ggml: GgmlBase, name: str, width: int) -> None:
    """The reference quantizer of libggml-base (ggml-trellis-quants.c) writes NumPy's bytes,
    and its dequantizer reads them back as NumPy does."""
    rows = random_rows(np.random.default_rng(width + 17), 64 * 256 // width, width)
    ref = TrellisQuant(name)
    want = ref.quantize(rows)
    got = ggml.quantize(name, rows)
    assert got == want, _first_bad_block(got, want, ref.block_bytes)
    np.testing.assert_array_equal(ggml.dequantize(name, got, rows.size),
                                  ref.dequantize(got, rows.size))


@pytest.mark.parametrize("name", list(TRELLIS))
def test_trellis_cpu_quantizer_byte_exact(ggml: GgmlBase, ggml_cpu: GgmlCpu, name: str) -> None:
    """The CPU backend's from_float (its SIMD Viterbi where the machine has one) writes the
    reference's bytes on edge rows: zero-error paths full of ties, scale boundaries, spikes,
    NaN, infinities, denormals and a subnormal amax."""
    rng = np.random.default_rng(71)
    ref = TrellisQuant(name)
    for rows in (trellis_rows(name, rng), trellis_edge_rows(rng), adversarial_rows(rng),
                 random_rows(rng, 200, 128)):
        want = ref.quantize(rows)
        got = ggml.quantize(name, rows)
        assert got == want, "reference " + _first_bad_block(got, want, ref.block_bytes)
        got = ggml_cpu.quantize(name, rows)
        assert got == want, "from_float " + _first_bad_block(got, want, ref.block_bytes)


@pytest.mark.parametrize("name", [*TRELLIS, *(t for t in TURBO if not t.endswith("_qjl"))])
def test_cpu_dot_reads_the_reference_values(ggml_cpu: GgmlCpu, name: str) -> None:
    """K . Q as flash attention computes it (the query in q8_0) is the dot product of the
    NumPy reference's values with that query, up to float rounding."""
    rng = np.random.default_rng(72)
    rows = random_rows(rng, 64, 256)
    queries = rng.standard_normal((64, 256)).astype(np.float32)
    ref = TrellisQuant(name) if name in TRELLIS else reference(name)
    data = ref.quantize(rows)
    values = ref.dequantize(data, rows.size).reshape(rows.shape).astype(np.float64)
    q8 = baselines.q8_0(queries).astype(np.float64)
    want = (values * q8).sum(axis=1)
    got = ggml_cpu.dot(name, data, queries)
    mag = np.abs(values * q8).sum(axis=1)
    assert np.all(np.abs(got - want) <= 1e-5 * mag)
