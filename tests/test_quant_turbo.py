"""turbo2/3/4 against a literal, scalar transliteration of docs/FORMAT.md.

`spec_block` below is written from the prose of FORMAT.md, one float32 operation at a
time, with none of the vectorization tricks of tqllama.quant.turbo (no lookup table, no
batching, math.frexp instead of np.frexp, bit twiddling by hand). Agreement byte for byte
on random and edge blocks is what makes the reference an oracle for the C code.
"""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tqllama.errors import TqError
from tqllama.quant import tables
from tqllama.quant.turbo import TurboQuantMSE, validate_blocks

F = np.float32
BITS = (4, 3, 2)


def d_of(k: int) -> F:
    return F(math.ldexp(float(tables.scale_mant()[k & 15]), (k >> 4) - tables.EXP_BIAS))


def spec_block(x: np.ndarray, bits: int) -> bytes:
    kv = [int(v) for v in tables.KVALUES[bits]]
    th = [F((kv[t] + kv[t + 1]) / 2) for t in range(len(kv) - 1)]
    cbmax = F(max(abs(v) for v in kv))
    lo, hi = tables.SEARCH[bits]
    m16 = [F(v) for v in tables.scale_mant()] + [F(2)]

    xs = []
    for v in x.astype(F):  # step 0
        v = F(0) if np.isnan(v) else v
        xs.append(min(max(v, F(-65504)), F(65504)))

    def count(y: F) -> int:
        return sum(1 for t in th if y > t)

    ks = []
    for j in range(2):
        sub = xs[32 * j : 32 * j + 32]
        amax = max(abs(v) for v in sub)
        if amax == 0:
            ks.append(0)
            continue
        t = F(amax / cbmax)
        if t == 0:
            k_ref = 1
        else:
            m, e = math.frexp(float(t))
            u = F(2 * m)
            i = next(i for i in range(17) if m16[i] >= u)
            k_ref = min(max(16 * (e - 1 + tables.EXP_BIAS) + i, 1), tables.KMAX)
        best_k, best_err = -1, None
        for delta in range(lo, hi + 1):
            k = min(max(k_ref + delta, 1), tables.KMAX)
            d = d_of(k)
            inv = F(F(1) / d)
            err = F(0)
            for v in sub:
                r = F(v - F(d * F(kv[count(F(v * inv))])))
                err = F(err + F(r * r))
            if best_err is None or err < best_err:
                best_k, best_err = k, err
        ks.append(best_k)
    k_hi = max(ks)
    e = max(0, (k_hi - 31 + 7) >> 3) if k_hi else 0
    f = [0 if k == 0 else max(k - 8 * e, 1) for k in ks]
    s = f[0] | f[1] << 5 | e << 10
    idx = []
    for j in range(2):
        if f[j] == 0:
            idx += [0] * 32
            continue
        inv = F(F(1) / d_of(8 * e + f[j]))
        idx += [count(F(v * inv)) for v in xs[32 * j : 32 * j + 32]]
    out = bytearray(s.to_bytes(2, "little"))
    for j in range(2):
        ij = idx[32 * j : 32 * j + 32]
        if bits == 4:
            out += bytes(ij[p] | ij[p + 16] << 4 for p in range(16))
    if bits in (2, 3):
        for j in range(2):
            ij = idx[32 * j : 32 * j + 32]
            out += bytes(
                (ij[p] & 3) | (ij[p + 8] & 3) << 2 | (ij[p + 16] & 3) << 4 | (ij[p + 24] & 3) << 6
                for p in range(8)
            )
    if bits == 3:
        for j in range(2):
            word = sum((idx[32 * j + i] >> 2) << i for i in range(32))
            out += word.to_bytes(4, "little")
    return bytes(out)


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
    assert validate_blocks(data, bits)
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


def test_validation_rule() -> None:
    good = TurboQuantMSE(4).quantize(np.ones(64, F))
    assert validate_blocks(good, 4)
    bad = (63 << 10 | 31 | 1 << 5).to_bytes(2, "little") + bytes(32)  # 8*63 + 31 ok, 505 ok
    assert validate_blocks(bad, 4)
    worse = (63 << 10 | 0 << 5 | 31).to_bytes(2, "little") + bytes(32)
    assert validate_blocks(worse, 4)
    assert not validate_blocks(b"\x00" * 33, 4)
    assert validate_blocks(((67 << 10) % 65536).to_bytes(2, "little") + bytes(32), 4)


def test_bad_lengths() -> None:
    q = TurboQuantMSE(4)
    with pytest.raises(TqError):
        q.quantize(np.zeros(48, F))
    with pytest.raises(TqError):
        q.dequantize(b"\x00" * 10, 64)
