"""The committed turbo constants: the source of truth for ggml-turbo-tables.h.

The int8 codebooks and the scale-search windows below are literals on purpose: training
(`scripts/train_codebooks.py`) only proposes them; what is written here is what every
backend uses, and `scripts/gen_tables.py` turns it into the C header.

Design record (trained codebooks, second version):

    python scripts/train_codebooks.py --verbose      (about 3 minutes on one core)

Lloyd iterations through the exact scale rule (blocks of 64, sub-blocks of 32, shared
exponent, 9-code search) on 20k rotated Gaussian blocks with row std log-uniform over
1e-2..1e2 (seed 1), started from the Gaussian Lloyd-Max centroids; then scaled to 127,
rounded, and improved by a local integer search; the window is the 9 consecutive deltas
the search picks most often, slid while the MSE falls. MSE per value relative to the
row variance, 200k held-out rows (unit std / log-uniform std):

    turbo5  0.00144 / 0.00144   (python scripts/train_codebooks.py --bits 5: 50 s)
    turbo4  0.00593 / 0.00593   (bar 0.0062; rotated q4_0 0.00738, iq4_nl 0.00580 at 4.5)
    turbo3  0.02550 / 0.02549   (bar 0.0265)
    turbo2  0.10558 / 0.10559   (bar 0.108)
    turbo1  0.35503 / 0.35483   (stage 1 of turbo2_qjl)

Wider windows were measured and not taken (C cost grows linearly with the width):
11 codes gain 0.1% (turbo4), 0.1% (turbo3), 0.4% (turbo2), 0.4% (turbo1); 17 codes gain
0.1%, 0.1%, 0.7%, 0.7%. Positive deltas pay off at 4 bits because the outer value 127
sits beyond the typical amax of 32 Gaussians once the codebook is Lloyd-shaped.
"""

from __future__ import annotations

import math

import numpy as np

from tqllama.quant.signs import QJL_SIGNS, SIGNS

EXP_BIAS = 24  # d = M[k & 15] * 2^((k >> 4) - EXP_BIAS)
KMAX = 535  # largest scale code: 8 * 63 + 31
XMAX = 65504.0  # sanitization clamp (largest finite f16)

# kvalues_turbo{b}: 2^b int8 values, ascending (FORMAT.md "Codebooks"). b = 1 is the
# stage-1 codebook of turbo2_qjl.
KVALUES: dict[int, tuple[int, ...]] = {
    5: (-127, -104, -92, -81, -71, -63, -55, -48, -42, -36, -30, -24, -18, -13, -8, -3,
        3, 8, 13, 18, 24, 30, 36, 42, 48, 55, 63, 71, 81, 92, 104, 127),
    4: (-127, -98, -77, -59, -44, -31, -18, -6, 6, 18, 31, 44, 59, 77, 98, 127),
    3: (-127, -77, -43, -14, 14, 43, 77, 127),
    2: (-127, -37, 37, 127),
    1: (-127, 127),
}

# TURBO{b}_SEARCH_LO/HI: the scale codes k_ref + LO .. k_ref + HI tried in step 3.
SEARCH: dict[int, tuple[int, int]] = {
    5: (-1, 7),
    4: (-3, 5),
    3: (-7, 1),
    2: (-15, -7),
    1: (-30, -22),
}

BITS = (5, 4, 3, 2, 1)


def cbmax(bits: int) -> int:
    """CBMAX_b = max |kvalues|."""
    return max(abs(v) for v in KVALUES[bits])


def kvalues(bits: int) -> np.ndarray:
    return np.array(KVALUES[bits], dtype=np.float32)


def kthresh(bits: int) -> np.ndarray:
    """Midpoints of neighbouring codebook values; exact in float32 (half-integers)."""
    v = np.array(KVALUES[bits], dtype=np.int32)
    return ((v[:-1] + v[1:]) / 2).astype(np.float32)


def scale_mant() -> np.ndarray:
    """M[i] = 2^(i/16) rounded to float32, i = 0..15 (tests check the rounding exactly)."""
    return np.array([2.0 ** (i / 16) for i in range(16)], dtype=np.float32)


def qjl_scale() -> np.float32:
    """TURBO_QJL_SCALE = 1 / (64 * 64 * E|u_1|), u uniform on the unit sphere of R^64.

    S = H_64 D3 H_64 D2 has orthonormal rows; for a residual r of random direction
    E[<S y, sign(S r)>] = 64 E|u_1| <y, r> / |r| exactly, so |r| / (64 E|u_1|) *
    <S y, sign(S r)> is unbiased. (QJL's sqrt(pi/2)/m is the Gaussian-rows limit, 0.39%
    larger at m = 64.) The extra 1/64 undoes the two unnormalized +-1 Hadamards Hu = 8 H
    of docs/FORMAT-QJL.md. E|u_1| = Γ(32) / (sqrt(pi) Γ(32.5)).
    """
    mean_abs = math.exp(math.lgamma(32.0) - math.lgamma(32.5)) / math.sqrt(math.pi)
    return np.float32(1.0 / (64 * 64 * mean_abs))


def signs() -> np.ndarray:
    return np.array(SIGNS, dtype=np.int8)


def qjl_signs() -> np.ndarray:
    return np.array(QJL_SIGNS, dtype=np.int8)  # D2 then D3
