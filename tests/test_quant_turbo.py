"""turbo2/3/4 against a literal, scalar transliteration of docs/FORMAT.md.

`spec_block` below is written from the prose of FORMAT.md, one float32 operation at a
time, with none of the vectorization tricks of tqllama.quant.turbo (no lookup table, no
batching, math.frexp instead of np.frexp, bit twiddling by hand). Agreement byte for byte
on random and edge blocks is what makes the reference an oracle for the C code.
"""

from __future__ import annotations

from decimal import Decimal, getcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tqlab.quant_spec import spec_block
from tqllama.errors import TqError
from tqllama.quant import tables
from tqllama.quant.turbo import TurboQuantMSE, sub_block_scales

F = np.float32
BITS = (4, 3, 2)


def edge_blocks() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    g = rng.standard_normal(64).astype(F)
    blocks = [
        np.zeros(64, F),
        g,
        g * F(1e-30),  # below the smallest scale: k clamps to 1
        g * F(1e4),  # near the top of the range
        np.full(64, F(65504)),
        np.full(64, F(-1e6)),  # clamped
        np.concatenate((np.zeros(32, F), g[:32])),
        np.concatenate((g[:32] * F(1e3), g[32:] * F(1e-3))),  # exponents cannot be shared
        np.concatenate((g[:32], g[32:] * F(2**-3))),
        np.where(np.arange(64) == 5, F(1e4), g),  # one huge outlier
        np.full(64, F(1.4e-45)),  # the smallest denormal: t underflows to 0
        (g * F(1e-40)).astype(F),  # denormals
        np.array([np.nan, np.inf, -np.inf] + [1.0] * 61, dtype=F),
        np.full(64, F(-0.0)),
    ]
    # Values exactly on thresholds of the unit scale: ties go to the lower index.
    blocks.append(np.repeat(tables.kthresh(4)[:4] / F(127), 16).astype(F))
    return blocks


def test_scale_mantissas_are_correctly_rounded() -> None:
    getcontext().prec = 50
    for i, m in enumerate(tables.scale_mant()):
        exact = Decimal(2) ** (Decimal(i) / Decimal(16))
        assert abs(Decimal(float(m)) - exact) < Decimal(2) ** -24  # half an ulp in [1, 2)


@pytest.mark.parametrize("bits", BITS)
def test_matches_spec_on_edge_blocks(bits: int) -> None:
    q = TurboQuantMSE(bits)
    for x in edge_blocks():
        assert q.quantize(x) == spec_block(x, bits), x[:4]


@pytest.mark.parametrize("bits", BITS)
def test_matches_spec_on_random_blocks(bits: int) -> None:
    rng = np.random.default_rng(bits)
    x = rng.standard_normal((24, 64)) * 10.0 ** rng.uniform(-6, 4, size=(24, 1))
    x = x.astype(F)
    data = TurboQuantMSE(bits).quantize(x)
    assert data == b"".join(spec_block(row, bits) for row in x)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        F,
        64,
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True),
    ),
    st.sampled_from(BITS),
)
def test_matches_spec_on_any_block(x: np.ndarray, bits: int) -> None:
    assert TurboQuantMSE(bits).quantize(x) == spec_block(x, bits)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(BITS),
    st.integers(1, 4),
    st.floats(-30, 4.5),
    st.integers(0, 2**32 - 1),
)
def test_roundtrip_properties(bits: int, n_blocks: int, log_scale: float, seed: int) -> None:
    x = (np.random.default_rng(seed).standard_normal((n_blocks, 64)) * 10.0**log_scale).astype(F)
    q = TurboQuantMSE(bits)
    data = q.quantize(x)
    assert len(data) == n_blocks * q.block_bytes
    y = q.dequantize(data, x.size)
    assert y.dtype == np.float32 and np.all(np.isfinite(y))
    np.testing.assert_array_equal(y, q.roundtrip(x).reshape(-1))
    # Re-quantizing the decoded values is a fixed point of the packing (indices survive).
    s, idx = q.decode_blocks(data, x.size)
    s2, idx2 = q.quantize_blocks(x)
    np.testing.assert_array_equal(s, s2)
    np.testing.assert_array_equal(idx, idx2)
    # Errors stay within what the codebook's spacing allows (no clipping disaster).
    scale = np.abs(x).max()
    if scale > 1e-5:
        assert np.abs(y - x.reshape(-1)).max() <= scale


@pytest.mark.parametrize("bits", BITS)
def test_nan_and_inf_are_defined(bits: int) -> None:
    q = TurboQuantMSE(bits)
    x = np.zeros(64, F)
    x[:4] = [np.nan, np.inf, -np.inf, 1.0]
    y = q.dequantize(q.quantize(x), 64)
    assert np.all(np.isfinite(y))
    assert y[1] > 30000 and y[2] < -30000  # +-Inf are clamped to +-65504, then quantized
    assert np.all(y[32:] == 0)  # the second sub-block is zero


def test_zero_block_is_all_zero_bytes() -> None:
    for bits in BITS:
        q = TurboQuantMSE(bits)
        assert q.quantize(np.zeros(128, F)) == bytes(2 * q.block_bytes)


def test_every_scale_word_decodes_to_a_finite_scale() -> None:
    d = sub_block_scales(np.arange(65536, dtype=np.uint16))
    assert np.all(np.isfinite(d)) and np.all(d >= 0)
    assert d.max() < 694 and d[d > 0].min() >= 2.0**-24


def test_bad_lengths() -> None:
    q = TurboQuantMSE(4)
    with pytest.raises(TqError):
        q.quantize(np.zeros(48, F))
    with pytest.raises(TqError):
        q.dequantize(b"\x00" * 10, 64)
