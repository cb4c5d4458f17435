"""turbo2/3/4 blocks exactly as docs/FORMAT.md specifies them, bit for bit.

Everything is float32 with one rounding per operation, as the C code compiled with
-ffp-contract=off does: NumPy never fuses, and every constant below is an np.float32 so
that nothing is promoted to float64. The work is vectorized over all sub-blocks of 32;
the only Python loops run over the candidate scales and the 32 positions (the squared
errors are summed in index order, never with np.sum, whose pairwise order differs).
"""

from __future__ import annotations

import numpy as np

from tqllama.errors import TqError
from tqllama.quant import tables

QK = 64  # values per block
QS = 32  # values per sub-block
CHUNK = 1 << 15  # blocks per vectorized pass: bounds the working memory (tens of MB)

F32 = np.float32
_M = tables.scale_mant()
_M17 = np.append(_M, F32(2.0))  # M[16] := 2 for the k_ref rule (FORMAT.md step 2)


def scale_from_code(k: np.ndarray) -> np.ndarray:
    """d(k) = ldexp(M[k & 15], (k >> 4) - TURBO_EXP_BIAS) as float32 (exact)."""
    k = np.asarray(k, dtype=np.int32)
    return np.ldexp(_M[k & 15], (k >> 4) - tables.EXP_BIAS).astype(F32)


def sanitize(x: np.ndarray) -> np.ndarray:
    """Step 0: NaN -> 0, clamp to [-65504, 65504] (so +-Inf -> +-65504)."""
    xmax = F32(tables.XMAX)
    return np.clip(np.nan_to_num(x, nan=F32(0), posinf=xmax, neginf=-xmax), -xmax, xmax)


class Codebook:
    """A codebook, its thresholds and scale-search window, and idx = #{t : y > kthresh[t]}.

    The committed codebooks are int8, so every threshold is a half-integer T/2 and
    y > T/2 <=> 2y > T <=> ceil(2y) > T (2y is exact in float32): a lookup on ceil(2y)
    gives the same index as the comparisons, ties included, in a few vector passes.
    Non-integer values (codebook training only) fall back to a binary search.
    """

    def __init__(self, values: np.ndarray, search: tuple[int, int]) -> None:
        self.values = np.asarray(values, dtype=F32)
        self.thresh = ((self.values[:-1] + self.values[1:]) / F32(2)).astype(F32)
        self.cbmax = F32(np.abs(self.values).max())
        self.search = range(search[0], search[1] + 1)
        twice = 2 * self.thresh.astype(np.float64)
        self._lut: np.ndarray | None = None
        if np.all(twice == np.round(twice)) and np.abs(twice).max() < 1024:
            t = twice.astype(np.int32)
            self._lo = int(t[0])  # ceil(2y) at or below this -> index 0
            self._hi = int(t[-1]) + 1  # at or above this -> the last index
            grid = np.arange(self._lo, self._hi + 1)
            self._lut = (grid[:, None] > t[None, :]).sum(axis=1).astype(np.uint8)

    @classmethod
    def from_table(cls, bits: int) -> Codebook:
        if bits not in tables.KVALUES:
            raise TqError(f"no turbo codebook for {bits} bits (have {sorted(tables.KVALUES)})")
        return cls(tables.kvalues(bits), tables.SEARCH[bits])

    def index(self, y: np.ndarray) -> np.ndarray:
        if self._lut is None:
            return np.searchsorted(self.thresh, y, side="left").astype(np.uint8)
        c = np.ceil(np.clip(y * F32(2), F32(self._lo), F32(self._hi)))
        return self._lut[c.astype(np.int32) - self._lo]


def reference_code(amax: np.ndarray, cb: Codebook) -> np.ndarray:
    """Step 2: the smallest scale code whose d maps amax inside the codebook."""
    t = amax / cb.cbmax
    m, e = np.frexp(t)
    u = m * F32(2)
    i = np.searchsorted(_M17, u, side="left")  # smallest i with M[i] >= u
    k = 16 * (e.astype(np.int32) - 1 + tables.EXP_BIAS) + i.astype(np.int32)
    # t == 0 (amax / CBMAX underflowed; frexp(0) gives e = 0): the smallest scale.
    k = np.where(t == 0, 1, k)
    return np.clip(k, 1, tables.KMAX)


def best_codes(xt: np.ndarray, cb: Codebook) -> np.ndarray:
    """Steps 1-3 for sub-blocks given position-major (xt[i, s]): the best code, 0 if zero."""
    amax = np.abs(xt).max(axis=0)
    k_ref = reference_code(amax, cb)
    best_k = np.zeros(amax.shape, dtype=np.int32)
    best_err = np.full(amax.shape, np.inf, dtype=F32)
    for delta in cb.search:
        k = np.clip(k_ref + delta, 1, tables.KMAX)
        d = scale_from_code(k)
        inv = F32(1) / d
        q = d * cb.values[cb.index(xt * inv)]  # d * (float) kvalues[idx]
        r = xt - q
        r2 = r * r
        err = np.zeros(amax.shape, dtype=F32)
        for i in range(QS):  # sequential, in index order
            err = err + r2[i]
        better = err < best_err  # strict: the first candidate wins ties
        best_err = np.where(better, err, best_err)
        best_k = np.where(better, k, best_k)
    return np.where(amax == 0, 0, best_k)


def shared_exponent(k0: np.ndarray, k1: np.ndarray) -> tuple[np.ndarray, ...]:
    """Step 5: (E, f0, f1) from the two best codes (0 = zero sub-block)."""
    k_hi = np.maximum(k0, k1)
    e = np.maximum(0, (k_hi - 31 + 7) >> 3)
    f0 = np.where(k0 == 0, 0, np.maximum(k0 - 8 * e, 1))
    f1 = np.where(k1 == 0, 0, np.maximum(k1 - 8 * e, 1))
    return e, f0, f1


def sub_block_scales(s: np.ndarray) -> np.ndarray:
    """d for both sub-blocks of each scale word: shape (n, 2), 0 for a zero sub-block."""
    s = s.astype(np.int32)
    e = s >> 10
    f = np.stack((s & 31, (s >> 5) & 31), axis=1)
    d = scale_from_code(8 * e[:, None] + f)
    return np.where(f == 0, F32(0), d)


# ---- packing ---------------------------------------------------------------------------


def _pack_2bit(idx: np.ndarray) -> np.ndarray:
    """(n, 2, 32) indices < 4 -> (n, 16) bytes: qs[8j+l] = i[l] | i[l+8]<<2 | ... (FORMAT)."""
    q = idx.reshape(-1, 2, 4, 8).astype(np.uint8)
    b = q[:, :, 0] | q[:, :, 1] << 2 | q[:, :, 2] << 4 | q[:, :, 3] << 6
    return b.reshape(-1, 16)


def _unpack_2bit(qs: np.ndarray) -> np.ndarray:
    b = qs.reshape(-1, 2, 1, 8)
    q = (b >> np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]) & 3
    return q.reshape(-1, 2, 32)


def pack_bits(bit: np.ndarray) -> np.ndarray:
    """(n, 2, 32) bits -> (n, 8) bytes: bit i of the little-endian uint32 of sub-block j."""
    return np.packbits(bit.astype(np.uint8).reshape(-1, 8, 8), axis=-1, bitorder="little")[
        ..., 0
    ].reshape(-1, 8)


def unpack_bits(qh: np.ndarray) -> np.ndarray:
    return np.unpackbits(qh.reshape(-1, 8, 1), axis=-1, bitorder="little").reshape(-1, 2, 32)


def pack_indices(idx: np.ndarray, bits: int) -> np.ndarray:
    """(n, 2, 32) indices -> (n, payload bytes) in the FORMAT.md order for `bits`."""
    if bits == 5:
        return np.concatenate((pack_indices(idx & 15, 4), pack_bits(idx >> 4)), axis=1)
    if bits == 4:
        q = idx.reshape(-1, 2, 2, 16).astype(np.uint8)
        return (q[:, :, 0] | q[:, :, 1] << 4).reshape(-1, 32)
    if bits == 3:
        return np.concatenate((_pack_2bit(idx & 3), pack_bits(idx >> 2)), axis=1)
    if bits == 2:
        return _pack_2bit(idx)
    return pack_bits(idx)  # bits == 1 (turbo2_qjl stage 1, docs/FORMAT-QJL.md)


def unpack_indices(payload: np.ndarray, bits: int) -> np.ndarray:
    if bits == 5:
        return unpack_indices(payload[:, :32], 4) | unpack_bits(payload[:, 32:40]) << 4
    if bits == 4:
        b = payload.reshape(-1, 2, 1, 16)
        return np.concatenate((b & 15, b >> 4), axis=2).reshape(-1, 2, 32)
    if bits == 3:
        return _unpack_2bit(payload[:, :16]) | unpack_bits(payload[:, 16:24]) << 2
    if bits == 2:
        return _unpack_2bit(payload)
    return unpack_bits(payload)


# ---- the quantizer ---------------------------------------------------------------------


class TurboQuantMSE:
    """turbo{bits} blocks: `quantize` gives the C block bytes, `dequantize` the floats."""

    def __init__(self, bits: int, cb: Codebook | None = None) -> None:
        self.bits = bits
        self.cb = cb if cb is not None else Codebook.from_table(bits)
        self.payload_bytes = bits * QK // 8
        self.block_bytes = 2 + self.payload_bytes
        self.bits_per_value = 8 * self.block_bytes / QK

    def quantize_blocks(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 64) float32 -> (scale words uint16 (n,), indices uint8 (n, 2, 32))."""
        x = sanitize(np.asarray(x, dtype=F32).reshape(-1, QK))
        s_all = np.empty(len(x), dtype=np.uint16)
        idx_all = np.empty((len(x), 2, QS), dtype=np.uint8)
        for lo in range(0, len(x), CHUNK):
            xb = x[lo : lo + CHUNK]
            xt = np.ascontiguousarray(xb.reshape(-1, QS).T)  # (32, sub-blocks)
            k = best_codes(xt, self.cb).reshape(-1, 2)
            e, f0, f1 = shared_exponent(k[:, 0], k[:, 1])
            s = (f0 | f1 << 5 | e << 10).astype(np.uint16)
            d = sub_block_scales(s)  # step 6: indices with the final scales
            inv = F32(1) / np.where(d == 0, F32(1), d)
            idx = self.cb.index(xb.reshape(-1, 2, QS) * inv[:, :, None])
            idx_all[lo : lo + CHUNK] = np.where(d[:, :, None] == 0, 0, idx)
            s_all[lo : lo + CHUNK] = s
        return s_all, idx_all

    def quantize(self, rows: np.ndarray) -> bytes:
        """float32 rows whose length is a multiple of 64 -> the C blocks, rows concatenated."""
        x = np.asarray(rows, dtype=F32)
        if x.shape[-1] % QK:
            raise TqError(f"row length {x.shape[-1]} is not a multiple of {QK}")
        s, idx = self.quantize_blocks(x.reshape(-1, QK))
        out = np.empty((len(s), self.block_bytes), dtype=np.uint8)
        out[:, :2] = s.astype("<u2").view(np.uint8).reshape(-1, 2)
        out[:, 2:] = pack_indices(idx, self.bits)
        return out.tobytes()

    def decode_blocks(self, data: bytes, n_values: int) -> tuple[np.ndarray, np.ndarray]:
        """Bytes -> (scale words (n,), indices (n, 2, 32)); checks the length."""
        if n_values % QK or len(data) != n_values // QK * self.block_bytes:
            raise TqError(f"{len(data)} bytes do not hold {n_values} turbo{self.bits} values")
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, self.block_bytes)
        s = raw[:, :2].copy().view("<u2")[:, 0]
        return s, unpack_indices(raw[:, 2:], self.bits)

    def dequantize(self, data: bytes, n_values: int) -> np.ndarray:
        """The C dequantization: d_j * (float) kvalues[idx] (d_j = 0 for a zero sub-block)."""
        s, idx = self.decode_blocks(data, n_values)
        d = sub_block_scales(s)
        return (d[:, :, None] * self.cb.values[idx]).reshape(-1)

    def roundtrip(self, rows: np.ndarray) -> np.ndarray:
        """dequantize(quantize(rows)) with the shape of rows, skipping the byte packing."""
        x = np.asarray(rows, dtype=F32)
        s, idx = self.quantize_blocks(x.reshape(-1, QK))
        d = sub_block_scales(s)
        return (d[:, :, None] * self.cb.values[idx]).reshape(x.shape)
