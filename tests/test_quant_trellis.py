"""turbo2t/turbo3t (tqllama/quant/trellis.py) against docs/FORMAT-TRELLIS.md.

`spec_block` and `spec_decode` below are written from the prose of FORMAT-TRELLIS.md,
one float32 operation at a time (scalar loops, math.frexp, bits by hand), none of the
vectorization of the reference: byte-for-byte agreement is what makes the reference an
oracle for the C code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tqllama.errors import TqError
from tqllama.quant import tables
from tqllama.quant.codebook import relative_mse, training_blocks
from tqllama.quant.trellis import (
    KMAX,
    QK,
    SCALE_BIAS,
    SCALE_BITS,
    TYPES,
    UNIT_LOG2,
    TrellisQuant,
    code_values,
    scale_from_code,
    viterbi,
)
from tqllama.quant.turbo import TurboQuantMSE

F = np.float32
NAMES = ("turbo2t", "turbo3t")
BARS = {"turbo2t": 0.080, "turbo3t": 0.0195}  # issue 17
M17 = [F(v) for v in tables.scale_mant()] + [F(2)]


# ---- the scalar transliteration of FORMAT-TRELLIS.md -----------------------------------


def d_of(k: int) -> F:
    return F(0) if k == 0 else F(math.ldexp(float(M17[k & 15]), (k >> 4) - SCALE_BIAS))


def c_of(name: str, s: int) -> F:
    tt = TYPES[name]
    if not tt.signed:
        return F(tt.table[s])
    v = tt.table[s >> 1]
    return F(-v if s & 1 else v)


def spec_sanitize(x: np.ndarray) -> list[F]:
    out = []
    for v in np.asarray(x, dtype=F):
        v = F(0) if np.isnan(v) else v
        out.append(min(max(v, F(-65504)), F(65504)))
    return out


def spec_viterbi(xs: list[F], dc: list[F], L: int, k: int) -> tuple[F, list[int]]:
    K, M = 1 << k, 1 << (L - k)
    D = []
    for s in range(1 << L):
        e = F(xs[0] - dc[s])
        D.append(F(e * e))
    back = []
    for t in range(1, len(xs)):
        best, arg = [], []
        for m in range(M):
            b, a = D[m * K], 0
            for j in range(1, K):
                if D[m * K + j] < b:
                    b, a = D[m * K + j], j
            best.append(b)
            arg.append(a)
        back.append(arg)
        newD = []
        for s in range(1 << L):
            e = F(xs[t] - dc[s])
            newD.append(F(best[s % M] + F(e * e)))
        D = newD
    s = 0
    for j in range(1, 1 << L):
        if D[j] < D[s]:
            s = j
    err = D[s]
    path = [s]
    for t in range(len(xs) - 1, 0, -1):
        m = s % M
        s = m * K + back[t - 1][m]
        path.append(s)
    return err, path[::-1]


def spec_block(x: np.ndarray, name: str) -> bytes:
    tt = TYPES[name]
    xs = spec_sanitize(x)
    amax = max(abs(v) for v in xs)
    if amax == 0:
        return bytes(tt.block_bytes)
    _, ea = math.frexp(float(amax))
    ss = F(0)
    for v in xs:
        y = F(math.ldexp(float(v), -ea))
        ss = F(ss + F(y * y))
    r = F(np.sqrt(F(ss / F(64))))
    r = max(r, F(F(math.ldexp(float(amax), -ea)) * F(0.3125)))  # the amax floor
    mr, er = math.frexp(float(r))
    u = F(2 * mr)
    i = next(i for i in range(17) if M17[i] >= u)
    k_ref = min(max(16 * (er + ea - 1 - UNIT_LOG2 + SCALE_BIAS) + i, 1), KMAX)
    best = None
    for delta in tt.search:
        k = min(max(k_ref + delta, 1), KMAX)
        d = d_of(k)
        dc = [F(d * c_of(name, s)) for s in range(1 << tt.L)]
        err, path = spec_viterbi(xs, dc, tt.L, tt.k)
        if best is None or err < best[0]:
            best = (err, k, path)
    _, k, path = best
    bits = [(k >> j) & 1 for j in range(SCALE_BITS)]
    bits += [(path[0] >> j) & 1 for j in range(tt.L - tt.k)]
    for s in path:
        bits += [(s >> (tt.L - tt.k + j)) & 1 for j in range(tt.k)]
    assert len(bits) == 8 * tt.block_bytes
    return sum(b << j for j, b in enumerate(bits)).to_bytes(tt.block_bytes, "little")


def spec_decode(block: bytes, name: str) -> list[F]:
    tt = TYPES[name]
    w = int.from_bytes(block, "little")
    d = d_of(w & ((1 << SCALE_BITS) - 1))
    return [
        F(d * c_of(name, (w >> (SCALE_BITS + tt.k * t)) & ((1 << tt.L) - 1))) for t in range(QK)
    ]


def edge_blocks() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    g = rng.standard_normal(64).astype(F)
    return [
        np.zeros(64, F),
        np.full(64, F(-0.0)),
        g,
        g * F(1e-30),  # below the smallest scale: the code clamps to 1
        g * F(1e4),
        np.full(64, F(65504)),
        np.full(64, F(-1e6)),  # clamped
        np.where(np.arange(64) == 5, F(1e4), g),  # one huge outlier
        np.full(64, F(1.4e-45)),  # the smallest denormal
        (g * F(1e-40)).astype(F),  # denormals
        np.array([np.nan, np.inf, -np.inf] + [1.0] * 61, dtype=F),
        np.concatenate((np.zeros(32, F), g[:32])),
        np.concatenate((g[:32] * F(1e3), g[32:] * F(1e-3))),
    ]


# ---- the format ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "nbytes", "bpv"), [("turbo2t", 18, 2.25), ("turbo3t", 26, 3.25)])
def test_sizes(name: str, nbytes: int, bpv: float) -> None:
    q = TrellisQuant(name)
    assert q.block_bytes == nbytes and q.bits_per_value == bpv
    tt = q.type
    assert SCALE_BITS + (tt.L - tt.k) == 16  # the scale word: code + start prefix
    assert q.bits == tt.k and TrellisQuant(tt.k).name == name


@pytest.mark.parametrize("name", NAMES)
def test_tables(name: str) -> None:
    tt = TYPES[name]
    assert len(tt.table) == 256
    assert all(isinstance(v, int) and -127 <= v <= 127 for v in tt.table)
    assert max(abs(v) for v in tt.table) == 127
    cf = code_values(tt.table, tt.L, tt.signed)
    assert len(cf) == 1 << tt.L and cf.dtype == F
    assert all(cf[s] == c_of(name, s) for s in range(1 << tt.L))


def test_every_scale_code_decodes_to_a_finite_scale() -> None:
    d = scale_from_code(np.arange(KMAX + 1))
    assert d[0] == 0 and np.all(np.isfinite(d)) and np.all(d[1:] > 0)
    assert np.all(np.diff(d[1:]) > 0)
    assert all(d[k] == d_of(k) for k in range(KMAX + 1))
    assert float(d[-1]) * 127 < 3.4e38


@pytest.mark.parametrize("name", NAMES)
def test_decode_of_hand_made_blocks(name: str) -> None:
    q = TrellisQuant(name)
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, size=(20, q.block_bytes), dtype=np.uint8)
    raw[0, :2] = 0  # scale code 0: a zero block, whatever its bits
    raw[1, :2] = [0xFF, 0x03]  # the largest scale code
    y = q.dequantize(raw.tobytes(), 20 * QK).reshape(20, QK)
    for b in range(20):
        np.testing.assert_array_equal(y[b], spec_decode(raw[b].tobytes(), name))
    assert np.all(y[0] == 0) and np.all(np.isfinite(y))


@pytest.mark.parametrize("name", NAMES)
def test_byte_format_round_trip(name: str) -> None:
    """Bytes -> (codes, states) -> bytes is the identity for any bytes."""
    from tqllama.quant.trellis import pack_blocks

    q = TrellisQuant(name)
    raw = np.random.default_rng(4).integers(0, 256, size=(50, q.block_bytes), dtype=np.uint8)
    codes, states = q.decode_blocks(raw.tobytes(), 50 * QK)
    # Neighbouring states overlap in L-k bits: the path is a walk of the trellis.
    tt = q.type
    np.testing.assert_array_equal(
        states[:, 1:] & ((1 << (tt.L - tt.k)) - 1), states[:, :-1] >> tt.k
    )
    assert pack_blocks(codes, states, tt).tobytes() == raw.tobytes()


@pytest.mark.parametrize("name", NAMES)
def test_windows_start_at_the_prefix_and_end_at_the_last_bit(name: str) -> None:
    """The start prefix (bits 10..15) feeds the first values only; the last bit of the block
    belongs to the last value only; no value reads a bit outside its block."""
    q = TrellisQuant(name)
    tt = q.type
    nbits = 8 * q.block_bytes

    def decode_with(bit: int) -> np.ndarray:
        w = 600 | (1 << bit)  # scale code 600, one stream bit set
        return q.dequantize(w.to_bytes(q.block_bytes, "little"), QK)

    base = q.dequantize((600).to_bytes(q.block_bytes, "little"), QK)
    for bit in range(SCALE_BITS, nbits):
        changed = np.nonzero(decode_with(bit) != base)[0]
        readers = [t for t in range(QK) if 10 + tt.k * t <= bit < 10 + tt.k * t + tt.L]
        assert set(changed) <= set(readers), bit
    assert [t for t in range(QK) if 10 + tt.k * t + tt.L > nbits] == []
    assert 10 + tt.k * (QK - 1) + tt.L == nbits  # the last window ends at the last bit


# ---- the encoder -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "T"), [("turbo2t", 4), ("turbo3t", 3)])
def test_viterbi_finds_the_best_path(name: str, T: int) -> None:
    """Against every bit string of a short trellis (start prefix included)."""
    tt = TYPES[name]
    cf = code_values(tt.table, tt.L, tt.signed)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, T)) * 40).astype(F)
    err, st = viterbi(x, np.broadcast_to(cf, (6, len(cf))), tt.L, tt.k)
    nb = tt.L - tt.k + tt.k * T
    streams = np.arange(1 << nb)
    paths = np.stack([(streams >> (tt.k * t)) & ((1 << tt.L) - 1) for t in range(T)], axis=1)
    for b in range(6):
        r = x[b][None, :] - cf[paths]
        r2 = r * r
        tot = r2[:, 0]
        for t in range(1, T):
            tot = tot + r2[:, t]
        assert err[b] == tot.min()
        # the returned path is a walk whose error is err
        assert np.all(st[b, 1:] & ((1 << (tt.L - tt.k)) - 1) == st[b, :-1] >> tt.k)
        r = x[b] - cf[st[b]]
        acc = F(0)
        for t in range(T):
            acc = F(acc + F(r[t] * r[t]))
        assert acc == err[b]


@pytest.mark.parametrize("name", NAMES)
def test_matches_spec_on_edge_blocks(name: str) -> None:
    q = TrellisQuant(name)
    for x in edge_blocks():
        assert q.quantize(x) == spec_block(x, name), x[:4]


@pytest.mark.parametrize("name", NAMES)
def test_matches_spec_on_random_blocks(name: str) -> None:
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((4, 64)) * 10.0 ** rng.uniform(-6, 4, size=(4, 1))).astype(F)
    assert TrellisQuant(name).quantize(x) == b"".join(spec_block(row, name) for row in x)


@pytest.mark.parametrize("name", NAMES)
def test_mse_bars(name: str) -> None:
    """Rotated Gaussian rows as `tqllama verify` measures them (a small sample)."""
    q = TrellisQuant(name)
    scalar = TurboQuantMSE(q.bits)
    for log_std in (False, True):
        x = training_blocks(300, 21 + log_std, log_std=log_std)
        mse = relative_mse(x, q.roundtrip(x))
        assert mse <= 0.96 * BARS[name], (log_std, mse)
        assert mse <= 0.8 * relative_mse(x, scalar.roundtrip(x))


@pytest.mark.parametrize("name", NAMES)
def test_quantize_dequantize_consistency(name: str) -> None:
    q = TrellisQuant(name)
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((3, 128)) * 10.0 ** rng.uniform(-8, 4, size=(3, 1))).astype(F)
    data = q.quantize(x)
    assert len(data) == 6 * q.block_bytes
    y = q.dequantize(data, x.size)
    assert y.dtype == F and np.all(np.isfinite(y))
    np.testing.assert_array_equal(y, q.roundtrip(x).reshape(-1))
    codes, states = q.decode_blocks(data, x.size)
    codes2, states2 = q.quantize_blocks(x)
    np.testing.assert_array_equal(codes, codes2)
    np.testing.assert_array_equal(states, states2)
    # Row by row, or in one call: the same bytes (no state crosses a block).
    assert b"".join(q.quantize(row) for row in x.reshape(-1, 64)) == data
    assert q.quantize(x) == data  # deterministic
    # Requantizing the decoded values stays close to them.
    z = q.roundtrip(y.reshape(-1, 64))
    assert relative_mse(y.reshape(-1, 64), z) < 2 * BARS[name]


@pytest.mark.parametrize("name", NAMES)
def test_zero_nan_inf_and_huge(name: str) -> None:
    q = TrellisQuant(name)
    assert q.quantize(np.zeros(128, F)) == bytes(2 * q.block_bytes)
    assert q.quantize(np.full(64, F(-0.0))) == bytes(q.block_bytes)
    x = np.zeros(64, F)
    x[:4] = [np.nan, np.inf, -np.inf, 1.0]
    y = q.dequantize(q.quantize(x), 64)
    assert np.all(np.isfinite(y))
    # +-Inf are clamped to +-65504, then quantized; two neighbouring extremes of opposite
    # sign are a hard case for a trellis (its steps are correlated), not a broken one.
    assert y[1] > 30000 and y[2] < -15000
    xs = np.clip(np.nan_to_num(x), -65504, 65504)
    assert relative_mse(xs[None], y[None]) < 0.3
    big = np.random.default_rng(8).standard_normal(64).astype(F) * F(3e4)
    yb = q.dequantize(q.quantize(big), 64)
    xb = np.clip(big, -65504, 65504)
    assert relative_mse(xb[None], yb[None]) < 3 * BARS[name]
    tiny = np.random.default_rng(9).standard_normal(64).astype(F) * F(1e-6)
    yt = q.dequantize(q.quantize(tiny), 64)
    assert relative_mse(tiny[None], yt[None]) < 3 * BARS[name]


def test_bad_input() -> None:
    q = TrellisQuant(3)
    with pytest.raises(TqError):
        q.quantize(np.zeros(48, F))
    with pytest.raises(TqError):
        q.dequantize(b"\x00" * 10, 64)
    with pytest.raises(TqError):
        TrellisQuant(4)
    with pytest.raises(TqError):
        TrellisQuant("turbo3t", table=np.zeros(10))


def test_training_step_lowers_the_error() -> None:
    """One centroid update with the paths of the committed table never raises the MSE it
    measures on those paths (the update is that fixed-path least-squares optimum)."""
    from tqllama.quant.trellis_train import centroid_update

    x = training_blocks(200, 31)
    for name in NAMES:
        q = TrellisQuant(name)
        codes, states = q.quantize_blocks(x)
        d = scale_from_code(codes)
        before = relative_mse(x, q.values(codes, states))
        new = centroid_update(x, d, states, np.array(q.type.table, float), q.type.signed)
        cf = code_values(new, q.type.L, q.type.signed)
        after = relative_mse(x, d[:, None] * cf[states])
        assert after <= before


def test_training_is_deterministic() -> None:
    """A tiny run of the table training twice: the same int8 table and window."""
    from tqllama.quant.trellis_train import train_table

    a = train_table("turbo2t", n_blocks=60, iterations=2, polish=1)
    b = train_table("turbo2t", n_blocks=60, iterations=2, polish=1)
    assert a == b
    assert len(a.table) == 256 and max(abs(v) for v in a.table) <= 127
