"""turbo2t/turbo3t: trellis-coded turbo blocks (issue 17), the NumPy reference.

docs/FORMAT-TRELLIS.md is the bit-exact contract; this module is its reference, written
like turbo.py: float32 throughout, one rounding per operation, no fused multiply-add,
sums in index order, vectorized over blocks (Python loops only over the 64 trellis steps
and the 3 scale candidates).

Design note
-----------
Bitshift trellis (QTIP, arXiv 2406.11235) in blocks of 64 at turbo2/turbo3's budget
(18 / 26 bytes): the block is one bit string; value t decodes from the L-bit window at
bit 10 + k*t (k = bits per value), so consecutive values share L - k bits, and the
encoder picks the whole string with a Viterbi search over the 2^L window states.

    turbo2t: k = 2, L = 8 (256 states, 64 trellis nodes), c(s) = T2[s]
    turbo3t: k = 3, L = 9 (512 states, 64 trellis nodes), c(s) = +-T3[s >> 1], sign = bit 0
    both:    T = 256 trained int8 entries; x_t = d * c(s_t)
    tail:    the L - k = 6 bits before value 0 are stored (bits 10..15): the trellis
             starts and ends in any state, one Viterbi pass per scale candidate
    scale:   one 10-bit code per block (1/16 octave, turbo's mantissas M, 64 octaves);
             reference = smallest code >= max(RMS, amax * 5/16) / 32; three candidates
             around it (turbo2t -12/-9/-6, turbo3t -9/-7/-5); the smallest Viterbi error
             wins, the first on ties

MSE per value relative to the row variance, rotated Gaussian rows of 64, the data of
`tqllama verify` (20k rows; unit std / log-uniform std):

    type      bits/v  MSE                bar     scalar turbo      Shannon (k bits)
    turbo2t   2.25    0.0679 / 0.0679    0.080   turbo2  0.1057    0.0625
    turbo3t   3.25    0.0182 / 0.0182    0.0195  turbo3  0.0256    0.0156

Alternatives measured (2-bit = the L8/k2 geometry, 3-bit = k3). With the committed
tables, 4k unit rows, only the scale search changed:

    scale candidates                      2-bit    3-bit
    1 (the centre)                        0.0699   0.0193
    3 adjacent                            0.0684   0.0185
    3 spaced (committed)                  0.0678   0.0182
    5 adjacent                            0.0676   0.0181
    9 adjacent (3x the encoder work)      0.0670   0.0177

Design experiments (unit-variance Gaussian rows, float tables trained 30 Lloyd
iterations from the same start, continuous RMS scale; compare within a group only):

    tail handling (2-bit, three scale candidates)      2-bit
    stored 6-bit prefix, one scale per 64 (chosen)     0.0698
    tail-biting (2-pass approx.), two scales per 32    0.0767   (exact TB: 0.6% lower)
    fixed start state 0, one scale per 64              0.0800

    code (stored prefix, one RMS scale, no search)     2-bit    3-bit
    full trained table, L = 8                          0.0715   0.0197 (k3: 32 nodes)
    full 512-entry table, L = 9                        -        0.0189 (over 256 entries)
    signed table (sign = bit 0, the oldest), L = 9     -        0.0187 (committed)
    signed table (sign = bit 8, the newest), L = 9     -        0.0201
    additive A[s & 15] + B[s >> 4], L = 8              0.0753   0.0213
    QTIP 1MAD hash-to-Gaussian, no table, L = 8        0.0786   -

At L = 8 and 2 bits the full table beats the signed one (128 entries) by 2.7% (0.0682
vs 0.0701, 60 iterations with the scale search, training set), so turbo2t keeps it: both
types decode with one 256-entry int8 lookup. The 3-bit type needs L = 9 for its bar and
fits 256 entries only with the sign bit. int8 rounding of the tables costs < 0.1%.

Encoder cost per block of 64 (per candidate: 64 * 2^L branch metrics e = x - d*c(s),
e*e, + best, then 63 * 64 minima over 2^k predecessors, a 64-step trace back; three
candidates): turbo2t 49k branch metrics + 36k compares (about 3k operations per value),
turbo3t 98k + 85k (about 6k per value); turbo's 9-candidate scalar search is about 50.
The NumPy reference does 20k blocks in 10 s (turbo2t) / 20 s (turbo3t) on one core.
Decoder per value: a 2-byte window (load, shift, mask), one 256-entry int8 lookup, for
turbo3t a conditional negation, one multiply by d (or an int8 product with a q8 query).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tqllama.errors import TqError
from tqllama.quant import tables
from tqllama.quant.turbo import sanitize

QK = 64  # values per block
SCALE_BITS = 10  # the scale code: bits 0..9 of the block
KMAX = (1 << SCALE_BITS) - 1  # largest scale code (0 = zero block)
SCALE_BIAS = 32  # d(k) = M[k & 15] * 2^((k >> 4) - SCALE_BIAS)
UNIT_LOG2 = 5  # the reference scale maps the block's RMS to 2^UNIT_LOG2 table units
AMAX_FLOOR = 0.3125  # the reference RMS is at least amax * AMAX_FLOOR (5/16, exact)
CHUNK = 2048  # blocks per vectorized pass (bounds the working memory to tens of MB)

F32 = np.float32
_M = tables.scale_mant()
_M17 = np.append(_M, F32(2.0))


@dataclass(frozen=True)
class TrellisType:
    """One trellis block type: L-bit states, k bits per value, int8 table T.

    The reconstruction of state s (L bits) is c(s) = T[s] (`signed` False), or with
    `signed` c(s) = T[s >> 1] for even s and -T[s >> 1] for odd s: bit 0, the oldest bit
    of the window, is then a sign. Either way T has 256 entries.
    """

    name: str
    k: int  # bits per value (and per trellis step)
    L: int  # state bits: the window of the bitstream one value decodes from
    signed: bool  # bit 0 of the state is a sign
    table: tuple[int, ...]  # 2^(L - signed) int8 values in [-127, 127]
    search: tuple[int, ...]  # scale-code offsets tried, in this order

    @property
    def prefix_bits(self) -> int:
        return self.L - self.k

    @property
    def payload_bits(self) -> int:
        return self.k * QK

    @property
    def block_bytes(self) -> int:
        return (SCALE_BITS + self.prefix_bits + self.payload_bits) // 8


# ---- the trained tables ---------------------------------------------------------------

# turbo2t: `python -m tqllama.quant.trellis_train turbo2t` (training-set MSE 0.067231)
# fmt: off
TABLE_2T: tuple[int, ...] = (
    14, 64, -13, -61, -19, 51, -11, 27, -37, 29, -5, -55, -75, 64, -15, 14, -127, 44, 2, 70, 46,
    -70, -20, 13, -52, -5, 32, -29, -79, -13, -45, 123, 16, -39, -100, 105, -60, 33, -101, -10,
    1, 68, -34, 38, -39, 53, -14, 15, -34, -85, 23, 5, 51, -1, 37, -96, 15, -54, 105, -21, -30,
    -10, -74, 29, 12, -13, -42, 51, -65, 122, 48, -16, -19, 83, 30, 8, -3, -39, 71, 36, 42, 11,
    8, -36, 18, -7, -36, -63, -10, 53, -57, 23, 27, -49, -15, 73, -8, -89, 41, -38, -22, 8, -57,
    46, -54, -19, 18, 81, 80, 5, 25, -68, 30, -46, 112, -16, -28, -46, 67, 28, -90, 6, 29, 8,
    -57, 42, -9, 71, -26, 37, -65, 10, -8, 72, 16, -50, 49, -2, -30, -87, -42, 33, 15, -13, 94,
    -24, 48, 16, -22, -41, 4, 55, 19, -55, -12, -108, -31, -2, 17, 32, -42, 37, 8, -7, 49, -18,
    19, 85, 41, 4, -26, -68, 27, 3, -87, -36, 63, 21, -26, -73, -12, 28, -34, 1, -55, -16, 60,
    32, -23, 83, 38, 4, 52, 6, 91, -26, 37, 20, -39, 1, 15, -58, 81, -16, 31, -2, -44, 69, -57,
    -73, -35, -5, 75, 36, 24, -15, 53, 24, -120, -3, 3, 44, -1, -33, 58, -1, -35, 27, 16, -35,
    -10, -61, 84, 33, 4, -35, -82, -17, 56, -17, -1, -21, 63, 36, 11, -17, 16, -44, -21, 40, 6,
    -66, 4, 23, 68, -45,
)
# fmt: on

# turbo3t: `python -m tqllama.quant.trellis_train turbo3t` (training-set MSE 0.018064)
# fmt: off
TABLE_3T: tuple[int, ...] = (
    34, 76, 19, -6, 10, 59, 32, 44, 29, 54, -3, 16, -18, 98, 5, 38, -12, 77, 37, 126, 83, -8,
    20, 41, -1, 29, 51, 14, -27, 42, -14, 107, 43, 22, -10, 99, -21, 55, -7, 34, 28, 77, 7, 52,
    15, 71, 30, 47, 23, -9, 65, 36, 70, 52, 30, -13, 43, 4, 104, 24, 12, 21, -4, 33, 50, 12, 32,
    68, -7, 126, 62, 24, 7, 94, 60, 37, 32, 9, 95, 57, 67, 30, 49, 9, 36, 25, -14, 2, 25, 67, 8,
    43, 48, 17, 3, 75, 28, -6, 45, 13, 19, 36, 5, 58, -6, 18, 44, 82, 110, 32, 48, 11, 59, 7,
    127, 22, 25, 6, 83, 54, -13, 32, 57, 36, -7, 69, 27, 96, 19, 59, -3, 36, 48, 81, 24, 7, 61,
    24, 35, -7, 6, 71, 46, 22, 108, 17, 76, 50, 17, 4, 34, 66, 46, -7, 28, -17, 6, 23, 39, 57,
    7, 52, 69, 29, 62, 17, 43, 87, 56, 36, 20, -12, 74, 24, -16, -5, 85, 41, 23, -7, -1, 41, 12,
    28, 7, 21, 76, 54, 22, 121, 59, 42, 80, 44, 106, 16, 26, 36, 8, 64, 41, 5, 88, 24, 57, 37,
    21, 86, 18, -5, 23, 37, 53, 73, 42, 19, 66, 44, -9, 26, 31, 55, 17, 5, 66, 30, 14, 45, 40,
    7, 22, -3, 77, 49, 30, 11, 7, 48, 73, 27, 50, 16, 89, 38, 41, 24, 58, 6, 22, 60, 33, 1, 38,
    58, 88, 11,
)
# fmt: on

TYPES: dict[str, TrellisType] = {
    "turbo2t": TrellisType("turbo2t", 2, 8, False, TABLE_2T, (-12, -9, -6)),
    "turbo3t": TrellisType("turbo3t", 3, 9, True, TABLE_3T, (-9, -7, -5)),
}
BITS_TO_NAME = {2: "turbo2t", 3: "turbo3t"}


# ---- the scale -------------------------------------------------------------------------


def scale_from_code(k: np.ndarray) -> np.ndarray:
    """d(k) = ldexp(M[k & 15], (k >> 4) - SCALE_BIAS) as float32, and d(0) = 0."""
    k = np.asarray(k, dtype=np.int32)
    d = np.ldexp(_M[k & 15], (k >> 4) - SCALE_BIAS).astype(F32)
    return np.where(k == 0, F32(0), d)


def reference_code(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest scale code whose d is at least RMS(x) / 2^UNIT_LOG2, per block.

    x: (n, 64) sanitized float32. Returns (k_ref, amax). The RMS is taken of the block
    scaled by an exact power of two (amax -> [0.5, 1)), so nothing under- or overflows:
    y_i = ldexp(x_i, -e_a), ss = sum of y_i * y_i in index order, r = sqrt(ss / 64).
    """
    amax = np.abs(x).max(axis=1)
    _, ea = np.frexp(amax)
    y = np.ldexp(x, -ea[:, None]).astype(F32)
    y2 = y * y
    ss = np.zeros(len(x), dtype=F32)
    for i in range(QK):  # sequential, in index order
        ss = ss + y2[:, i]
    r = np.sqrt(ss / F32(QK))
    r = np.maximum(r, np.ldexp(amax, -ea) * F32(AMAX_FLOOR))
    mr, er = np.frexp(r)
    u = mr * F32(2)
    i = np.searchsorted(_M17, u, side="left")  # smallest i with M[i] >= u (M[16] := 2)
    k = 16 * (er.astype(np.int32) + ea.astype(np.int32) - 1 - UNIT_LOG2 + SCALE_BIAS)
    k = k + i.astype(np.int32)
    k = np.where(amax == 0, 1, k)  # (a zero block; its code is replaced by 0 later)
    return np.clip(k, 1, KMAX), amax


# ---- the trellis -----------------------------------------------------------------------


def code_values(table: np.ndarray | tuple[float, ...], L: int, signed: bool) -> np.ndarray:
    """c(s) for every L-bit state as float32: T[s], or T[s >> 1] negated for odd s."""
    t = np.asarray(table, dtype=F32)
    n = 1 << (L - int(signed))
    if len(t) != n:
        raise TqError(f"this trellis table needs {n} entries, not {len(t)}")
    if not signed:
        return t.copy()
    s = np.arange(1 << L)
    # + 0: a negated zero entry is +0.0, as the C code's (float) -T[i] is.
    return (np.where(s & 1, -t[s >> 1], t[s >> 1]) + F32(0)).astype(F32)


def viterbi(x: np.ndarray, dc: np.ndarray, L: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The minimum-error state path through the trellis, for each block.

    x: (n, T) float32 values; dc: (n, 2^L) float32 reconstruction d * c(s) per state.
    Returns (err (n,) float32: the path's sum of squared errors accumulated in index
    order, states (n, T) int32). State s_t's low L-k bits are s_{t-1} >> k; ties keep the
    smallest predecessor state and the smallest final state (FORMAT-TRELLIS.md).
    """
    n, T = x.shape
    K = 1 << k
    M = 1 << (L - k)
    e = x[:, 0, None] - dc
    D = e * e  # every state may start the path: the prefix bits are stored
    bp = np.empty((T, n, M), dtype=np.uint8)
    rows = np.arange(n)[:, None]
    mids = np.arange(M)[None, :]
    for t in range(1, T):
        Dr = D.reshape(n, M, K)  # Dr[:, m, a] = D[m * K + a]: the K predecessors of m
        a = Dr.argmin(axis=2)  # the first (smallest a) of equal minima
        best = Dr[rows, mids, a]
        bp[t] = a
        e = x[:, t, None] - dc
        D = e * e
        D.reshape(n, K, M)[:] += best[:, None, :]  # D[b * M + m] = best[m] + e * e
    s = D.argmin(axis=1)
    ar = np.arange(n)
    err = D[ar, s]
    st = np.empty((n, T), dtype=np.int32)
    st[:, T - 1] = s
    for t in range(T - 1, 0, -1):
        m = s & (M - 1)
        s = (m << k) | bp[t][ar, m]
        st[:, t - 1] = s
    return err, st


def encode_blocks(
    x: np.ndarray, cf: np.ndarray, tt: TrellisType
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 64) sanitized float32 -> (scale codes (n,), states (n, 64), path errors (n,))."""
    n = len(x)
    codes = np.zeros(n, dtype=np.int32)
    states = np.zeros((n, QK), dtype=np.int32)
    errs = np.zeros(n, dtype=F32)
    for lo in range(0, n, CHUNK):
        xb = x[lo : lo + CHUNK]
        k_ref, amax = reference_code(xb)
        best_err = np.full(len(xb), np.inf, dtype=F32)
        best_k = np.zeros(len(xb), dtype=np.int32)
        best_st = np.zeros((len(xb), QK), dtype=np.int32)
        for delta in tt.search:
            kk = np.clip(k_ref + delta, 1, KMAX)
            d = scale_from_code(kk)
            err, st = viterbi(xb, d[:, None] * cf[None, :], tt.L, tt.k)
            better = err < best_err  # strict: the first candidate wins ties
            best_err = np.where(better, err, best_err)
            best_k = np.where(better, kk, best_k)
            best_st = np.where(better[:, None], st, best_st)
        zero = amax == 0
        codes[lo : lo + CHUNK] = np.where(zero, 0, best_k)
        states[lo : lo + CHUNK] = np.where(zero[:, None], 0, best_st)
        errs[lo : lo + CHUNK] = np.where(zero, F32(0), best_err)
    return codes, states, errs


# ---- the bitstream ---------------------------------------------------------------------


def pack_blocks(codes: np.ndarray, states: np.ndarray, tt: TrellisType) -> np.ndarray:
    """Scale codes and state paths -> (n, block_bytes) uint8 (little-endian bit string:
    bits 0..9 the scale code, then the L-k prefix bits = s_0's low bits, then k bits
    s_t >> (L-k) per value t)."""
    n = len(codes)
    nbits = 8 * tt.block_bytes
    bits = np.zeros((n, nbits), dtype=np.uint8)
    j = np.arange(SCALE_BITS)
    bits[:, :SCALE_BITS] = (codes[:, None] >> j) & 1
    p = np.arange(tt.prefix_bits)
    bits[:, SCALE_BITS : SCALE_BITS + tt.prefix_bits] = (states[:, :1] >> p) & 1
    new = states >> tt.prefix_bits  # (n, 64): the k new bits of each step
    b = (new[:, :, None] >> np.arange(tt.k)) & 1
    bits[:, SCALE_BITS + tt.prefix_bits :] = b.reshape(n, -1)
    return np.packbits(bits, axis=1, bitorder="little")


def unpack_blocks(raw: np.ndarray, tt: TrellisType) -> tuple[np.ndarray, np.ndarray]:
    """(n, block_bytes) uint8 -> (scale codes (n,), states (n, 64)): s_t is the L bits of
    the block starting at bit SCALE_BITS + k t."""
    bits = np.unpackbits(raw, axis=1, bitorder="little").astype(np.int32)
    codes = (bits[:, :SCALE_BITS] << np.arange(SCALE_BITS)).sum(axis=1)
    pos = SCALE_BITS + tt.k * np.arange(QK)[:, None] + np.arange(tt.L)[None, :]
    states = (bits[:, pos] << np.arange(tt.L)).sum(axis=2)
    return codes.astype(np.int32), states.astype(np.int32)


# ---- the quantizer ---------------------------------------------------------------------


class TrellisQuant:
    """turbo2t / turbo3t blocks: `quantize` gives the block bytes, `dequantize` the floats.

    `table` replaces the committed table (training only); float values are allowed there.
    """

    def __init__(
        self,
        bits: int | str,
        table: np.ndarray | None = None,
        search: tuple[int, ...] | None = None,
    ) -> None:
        name = bits if isinstance(bits, str) else BITS_TO_NAME.get(bits, "")
        if name not in TYPES:
            raise TqError(f"no trellis type {bits!r} (have {sorted(TYPES)})")
        tt = TYPES[name]
        if table is not None or search is not None:
            tt = TrellisType(
                tt.name,
                tt.k,
                tt.L,
                tt.signed,
                tuple(table) if table is not None else tt.table,
                tuple(search) if search is not None else tt.search,
            )
        self.type = tt
        self.name = tt.name
        self.bits = tt.k
        self.cf = code_values(tt.table, tt.L, tt.signed)
        self.block_bytes = tt.block_bytes
        self.bits_per_value = 8 * self.block_bytes / QK

    def quantize_blocks(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 64) float32 -> (scale codes (n,), states (n, 64))."""
        x = sanitize(np.asarray(x, dtype=F32).reshape(-1, QK))
        codes, states, _ = encode_blocks(x, self.cf, self.type)
        return codes, states

    def values(self, codes: np.ndarray, states: np.ndarray) -> np.ndarray:
        """d(code) * c(s_t) for every value: (n, 64) float32."""
        return scale_from_code(codes)[:, None] * self.cf[states]

    def quantize(self, rows: np.ndarray) -> bytes:
        """float32 rows whose length is a multiple of 64 -> the blocks, rows concatenated."""
        x = np.asarray(rows, dtype=F32)
        if x.shape[-1] % QK:
            raise TqError(f"row length {x.shape[-1]} is not a multiple of {QK}")
        codes, states = self.quantize_blocks(x.reshape(-1, QK))
        return pack_blocks(codes, states, self.type).tobytes()

    def decode_blocks(self, data: bytes, n_values: int) -> tuple[np.ndarray, np.ndarray]:
        """Bytes -> (scale codes (n,), states (n, 64)); checks the length."""
        if n_values % QK or len(data) != n_values // QK * self.block_bytes:
            raise TqError(f"{len(data)} bytes do not hold {n_values} {self.name} values")
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, self.block_bytes)
        return unpack_blocks(raw, self.type)

    def dequantize(self, data: bytes, n_values: int) -> np.ndarray:
        codes, states = self.decode_blocks(data, n_values)
        return self.values(codes, states).reshape(-1)

    def roundtrip(self, rows: np.ndarray) -> np.ndarray:
        """dequantize(quantize(rows)) with the shape of rows, skipping the byte packing."""
        x = np.asarray(rows, dtype=F32)
        codes, states = self.quantize_blocks(x.reshape(-1, QK))
        return self.values(codes, states).reshape(x.shape)
