"""llama.cpp's q8_0, q5_1, q5_0, q4_0 and iq4_nl (reference paths of ggml-quants.c), for
comparison and for tqllama tune's predictions.

Vectorized over blocks of 32, float32 arithmetic, the scale rounded through fp16 as the
block stores it. Not bit-exact with ggml (the sums are pairwise; the tables only compare
MSE), but each follows its C function step by step:
- q8_0: quantize_row_q8_0_ref (d = amax/127, round half away from zero).
- q5_1: quantize_row_q5_1_ref (d = (max - min)/31, m = min, idx = (uint8)((x - min)/d + 0.5)).
- q5_0: quantize_row_q5_0_ref (d = max/-16 with the signed max, idx = min(31, (int8)(x/d + 16.5))).
- q4_0: quantize_row_q4_0_ref (d = max/-8 with the signed max, idx = min(15, (int8)(x/d + 8.5))).
- iq4_nl: quantize_row_iq4_nl_impl with no importance weights (weights x^2): ntry = 7 is
  quantize_iq4_nl's full scale search; ntry = -1 is quantize_row_iq4_nl_ref, the path the
  KV cache takes (one weighted least-squares scale, indices from the first guess).
"""

from __future__ import annotations

import numpy as np

from tqllama.errors import TqError

F32 = np.float32
QK = 32
KVALUES_IQ4NL = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=F32
)


def _blocks(rows: np.ndarray) -> np.ndarray:
    x = np.asarray(rows, dtype=F32)
    if x.shape[-1] % QK:
        raise TqError(f"row length {x.shape[-1]} is not a multiple of {QK}")
    return x.reshape(-1, QK)


def _fp16(d: np.ndarray) -> np.ndarray:
    return d.astype(np.float16).astype(F32)


def _signed_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(amax, the value with that magnitude): the first one, as the C loops keep it."""
    pos = np.argmax(np.abs(x), axis=1)
    mx = np.take_along_axis(x, pos[:, None], axis=1)[:, 0]
    return np.abs(mx), mx


def _inverse(d: np.ndarray) -> np.ndarray:
    return np.where(d != 0, F32(1) / np.where(d != 0, d, F32(1)), F32(0)).astype(F32)


def q8_0(rows: np.ndarray) -> np.ndarray:
    x = _blocks(rows)
    d = np.abs(x).max(axis=1) / F32(127)
    q = np.trunc(x * _inverse(d)[:, None] + np.copysign(F32(0.5), x))  # roundf
    return (q * _fp16(d)[:, None]).reshape(np.shape(rows))


def _symmetric(rows: np.ndarray, half: int) -> np.ndarray:
    """q4_0 (half = 8) and q5_0 (16): one scale from the signed max, codes 0 .. 2*half-1."""
    x = _blocks(rows)
    _, mx = _signed_max(x)
    d = mx / F32(-half)
    q = np.minimum(2 * half - 1, np.trunc(x * _inverse(d)[:, None] + F32(half + 0.5)))
    return ((q - F32(half)) * _fp16(d)[:, None]).reshape(np.shape(rows))


def q4_0(rows: np.ndarray) -> np.ndarray:
    return _symmetric(rows, 8)


def q5_0(rows: np.ndarray) -> np.ndarray:
    return _symmetric(rows, 16)


def q5_1(rows: np.ndarray) -> np.ndarray:
    x = _blocks(rows)
    lo, hi = x.min(axis=1), x.max(axis=1)
    d = (hi - lo) / F32(31)
    q = np.trunc((x - lo[:, None]) * _inverse(d)[:, None] + F32(0.5))
    return (q * _fp16(d)[:, None] + _fp16(lo)[:, None]).reshape(np.shape(rows))


_TWICE_THRESH = (KVALUES_IQ4NL[:-1] + KVALUES_IQ4NL[1:]).astype(np.int32)  # 2 * midpoints
_LO, _HI = int(_TWICE_THRESH[0]) - 1, int(_TWICE_THRESH[-1])
_LUT = (np.arange(_LO, _HI + 1)[:, None] >= _TWICE_THRESH[None, :]).sum(axis=1)


def _best_index_iq4nl(y: np.ndarray) -> np.ndarray:
    """best_index_int8: the nearest value, the upper one on a tie. The midpoints are
    half-integers T/2, so y >= T/2 <=> floor(2y) >= T: a lookup on floor(2y)."""
    f = np.floor(np.clip(y * F32(2), F32(_LO), F32(_HI)))
    return _LUT[f.astype(np.int32) - _LO]


def _weighted_fit(x: np.ndarray, w: np.ndarray, inv: np.ndarray) -> tuple[np.ndarray, ...]:
    idx = _best_index_iq4nl(x * inv[:, None])
    q = KVALUES_IQ4NL[idx]
    return idx, (w * q * x).sum(axis=1), (w * q * q).sum(axis=1)


def iq4_nl(rows: np.ndarray, ntry: int = 7) -> np.ndarray:
    x = _blocks(rows)
    w = x * x
    amax, mx = _signed_max(x)
    live = amax >= F32(1e-15)
    safe_mx = np.where(live, mx, F32(1))
    v0 = KVALUES_IQ4NL[0]
    d = (-safe_mx / v0) if ntry > 0 else (safe_mx / v0)
    idx, sumqx, sumq2 = _weighted_fit(x, w, F32(1) / d)
    d = np.where(sumq2 > 0, sumqx / np.where(sumq2 > 0, sumq2, F32(1)), F32(0)).astype(F32)
    best = d * sumqx
    for itry in range(-ntry, ntry + 1):
        inv = ((F32(itry) + v0) / safe_mx).astype(F32)
        _, sqx, sq2 = _weighted_fit(x, w, inv)
        better = (sq2 > 0) & (sqx * sqx > best * sq2)
        d_try = sqx / np.where(sq2 > 0, sq2, F32(1))
        d = np.where(better, d_try, d).astype(F32)
        best = np.where(better, d_try * sqx, best).astype(F32)
    d = np.where(live, d, F32(0))
    dh = _fp16(d)
    if ntry > 0:  # indices again with the chosen (unrounded) scale
        idx = _best_index_iq4nl(x * _inverse(d)[:, None])
    y = KVALUES_IQ4NL[idx] * dh[:, None]
    return np.where(live[:, None], y, F32(0)).reshape(np.shape(rows))


BASELINES = {
    "q8_0": (q8_0, 8.5),
    "q5_1": (q5_1, 6.0),
    "q5_0": (q5_0, 5.5),
    "q4_0": (q4_0, 4.5),
    "iq4_nl": (iq4_nl, 4.5),
    "iq4_nl_kv": (lambda r: iq4_nl(r, ntry=-1), 4.5),
}
