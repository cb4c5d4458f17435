"""A literal, scalar transliteration of docs/FORMAT.md and docs/FORMAT-QJL.md.

Written from the prose, one float32 operation at a time, with none of the vectorization
of tqllama.quant (no lookup tables, no batching, math.frexp instead of np.frexp, bits
packed by hand): agreement byte for byte is what makes the reference an oracle.
"""

from __future__ import annotations

import math

import numpy as np

from tqllama.quant import tables

F = np.float32


def d_of(k: int) -> F:
    return F(math.ldexp(float(tables.scale_mant()[k & 15]), (k >> 4) - tables.EXP_BIAS))


def sanitize(x: np.ndarray) -> list[F]:
    out = []
    for v in x.astype(F):
        v = F(0) if np.isnan(v) else v
        out.append(min(max(v, F(-65504)), F(65504)))
    return out


def stage(xs: list[F], bits: int) -> tuple[int, list[int]]:
    """FORMAT.md steps 1-6 on a sanitized block: (s, 64 indices)."""
    kv = [int(v) for v in tables.KVALUES[bits]]
    th = [F((kv[t] + kv[t + 1]) / 2) for t in range(len(kv) - 1)]
    cbmax = F(max(abs(v) for v in kv))
    lo, hi = tables.SEARCH[bits]
    m16 = [F(v) for v in tables.scale_mant()] + [F(2)]

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
    idx = []
    for j in range(2):
        if f[j] == 0:
            idx += [0] * 32
            continue
        inv = F(F(1) / d_of(8 * e + f[j]))
        idx += [count(F(v * inv)) for v in xs[32 * j : 32 * j + 32]]
    return f[0] | f[1] << 5 | e << 10, idx


def stage_values(s: int, idx: list[int], bits: int) -> list[F]:
    e = s >> 10
    out = []
    for j, f in enumerate((s & 31, (s >> 5) & 31)):
        d = F(0) if f == 0 else d_of(8 * e + f)
        out += [F(d * F(tables.KVALUES[bits][i])) for i in idx[32 * j : 32 * j + 32]]
    return out


def _bit_words(bits: list[int]) -> bytes:
    """Bit i of the little-endian 32-bit word of each sub-block."""
    out = b""
    for j in range(2):
        word = sum(bits[32 * j + i] << i for i in range(32))
        out += word.to_bytes(4, "little")
    return out


def pack(idx: list[int], bits: int) -> bytes:
    out = b""
    if bits == 4:
        for j in range(2):
            ij = idx[32 * j : 32 * j + 32]
            out += bytes(ij[p] | ij[p + 16] << 4 for p in range(16))
    if bits in (2, 3):
        for j in range(2):
            ij = [i & 3 for i in idx[32 * j : 32 * j + 32]]
            out += bytes(
                ij[p] | ij[p + 8] << 2 | ij[p + 16] << 4 | ij[p + 24] << 6 for p in range(8)
            )
    if bits == 3:
        out += _bit_words([i >> 2 for i in idx])
    if bits == 1:
        out += _bit_words(idx)
    return out


def spec_block(x: np.ndarray, bits: int) -> bytes:
    s, idx = stage(sanitize(x), bits)
    return s.to_bytes(2, "little") + pack(idx, bits)


def hu(v: list[F]) -> list[F]:
    """The in-place +-1 Walsh-Hadamard butterflies of FORMAT-QJL.md."""
    v = list(v)
    h = 1
    while h < 64:
        for i in range(64):
            if i & h == 0:
                a, b = v[i], v[i + h]
                v[i], v[i + h] = F(a + b), F(a - b)
        h *= 2
    return v


def spec_qjl_block(x: np.ndarray, bits: int) -> bytes:
    xs = sanitize(x)
    s, idx = stage(xs, bits - 1)
    x_mse = stage_values(s, idx, bits - 1)
    r = [F(a - b) for a, b in zip(xs, x_mse, strict=True)]
    acc = F(0)
    for v in r:
        acc = F(acc + F(v * v))
    rn = np.float16(min(F(np.sqrt(acc)), F(65504)))
    q = tables.qjl_signs()
    z = hu(
        [
            F(v * F(int(q[64 + i])))
            for i, v in enumerate(hu([F(v * F(int(q[i]))) for i, v in enumerate(r)]))
        ]
    )
    sign_bits = [1 if v < 0 else 0 for v in z]
    qr = sum(b << i for i, b in enumerate(sign_bits)).to_bytes(8, "little")
    return s.to_bytes(2, "little") + pack(idx, bits - 1) + rn.tobytes() + qr
