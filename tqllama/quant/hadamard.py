"""The fast Walsh-Hadamard transform and the randomized rotation R_n = D_n H_n D_n.

H_n is orthonormal and in Sylvester order (H_1 = [1], H_2n = [[H_n, H_n], [H_n, -H_n]] /
sqrt(2)), the matrix llama.cpp's ggml_gen_hadamard builds, so `fwht(rows) == rows @ H_n`
(H_n is symmetric). The transform runs in O(n log n) over all rows at once: each butterfly
stage reshapes the rows into (pairs of) halves instead of looping over rows in Python.
"""

from __future__ import annotations

import numpy as np

from tqllama.errors import TqError
from tqllama.quant.signs import rotation_signs


def _check_size(n: int) -> None:
    if n < 1 or n & (n - 1):
        raise TqError(f"Hadamard size must be a power of two, got {n}")


def fwht(rows: np.ndarray, normalized: bool = True) -> np.ndarray:
    """rows @ H_n for every row (last axis, length n a power of two); keeps the float dtype.

    normalized=False leaves out the final 1/sqrt(n): the +-1 Sylvester matrix, whose
    butterflies (stage h = 1, 2, 4, ...: (a, b) -> (a + b, a - b), one rounding each) are
    the exact order docs/FORMAT-QJL.md prescribes for the QJL signs.
    """
    x = np.asarray(rows)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    n = x.shape[-1]
    _check_size(n)
    lead = x.shape[:-1]
    y = x.reshape(-1, n).copy()
    out = np.empty_like(y)
    h = 1
    while h < n:
        # Stage h: within each group of 2h, (a, b) -> (a + b, a - b) for the two halves.
        v = y.reshape(-1, n // (2 * h), 2, h)
        w = out.reshape(-1, n // (2 * h), 2, h)
        np.add(v[:, :, 0, :], v[:, :, 1, :], out=w[:, :, 0, :])
        np.subtract(v[:, :, 0, :], v[:, :, 1, :], out=w[:, :, 1, :])
        y, out = out, y
        h *= 2
    if normalized:
        y *= y.dtype.type(1.0 / np.sqrt(n))
    return y.reshape(*lead, n)


def hadamard_matrix(n: int) -> np.ndarray:
    """The dense orthonormal H_n (float64), for tests and small experiments."""
    _check_size(n)
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


def rotate(rows: np.ndarray) -> np.ndarray:
    """rows @ R_n with R_n = D_n H_n D_n (FORMAT.md); R_n is symmetric and its own inverse."""
    x = np.asarray(rows)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    d = rotation_signs(x.shape[-1]).astype(x.dtype)
    return fwht(x * d) * d
