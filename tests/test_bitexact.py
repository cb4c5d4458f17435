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
)
from tqlab.ggmllib import GgmlBase, GgmlCpu

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
