"""The committed turbo constants: the source of truth for ggml-turbo-tables.h.

The int8 codebooks and the scale-search windows below are literals on purpose: training
(`scripts/train_codebooks.py`) only proposes them; what is written here is what every
backend uses, and `scripts/gen_tables.py` turns it into the C header.

Design record: FIRST VERSION (placeholder so the C code compiles): Gaussian Lloyd-Max
centroids scaled to 127 and rounded; search window -4..+4. Not trained for the scale rule.
"""

from __future__ import annotations

import numpy as np

from tqllama.quant.signs import QJL_SIGNS, SIGNS

EXP_BIAS = 24  # d = M[k & 15] * 2^((k >> 4) - EXP_BIAS)
KMAX = 535  # largest scale code: 8 * 63 + 31
XMAX = 65504.0  # sanitization clamp (largest finite f16)

# kvalues_turbo{b}: 2^b int8 values, ascending (FORMAT.md "Codebooks"). b = 1 is the
# stage-1 codebook of turbo2_qjl.
KVALUES: dict[int, tuple[int, ...]] = {
    4: (-127, -96, -75, -58, -44, -31, -18, -6, 6, 18, 31, 44, 58, 75, 96, 127),
    3: (-127, -79, -45, -14, 14, 45, 79, 127),
    2: (-127, -38, 38, 127),
    1: (-127, 127),
}

# TURBO{b}_SEARCH_LO/HI: the scale codes k_ref + LO .. k_ref + HI tried in step 3.
SEARCH: dict[int, tuple[int, int]] = {
    4: (-4, 4),
    3: (-4, 4),
    2: (-4, 4),
    1: (-4, 4),
}

BITS = (4, 3, 2, 1)


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


def signs() -> np.ndarray:
    return np.array(SIGNS, dtype=np.int8)


def qjl_signs() -> np.ndarray:
    return np.array(QJL_SIGNS, dtype=np.int8)
