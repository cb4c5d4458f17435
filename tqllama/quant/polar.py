"""PolarQuant as the TurboQuant paper states it (TurboQuant_mse, arXiv 2504.19874).

Rotate the row with R_d, keep its norm (float32), and quantize every coordinate of the
unit vector with the Lloyd-Max codebook of the Beta law a coordinate of a uniform unit
vector in R^d follows (or of its Gaussian limit N(0, 1/d)). No per-block scale: this is
the scheme the turbo blocks improve on, kept to reproduce the paper's figures.
"""

from __future__ import annotations

import numpy as np

from tqllama.errors import TqError
from tqllama.quant.codebook import beta_lloyd_max, gaussian_lloyd_max
from tqllama.quant.hadamard import rotate

F32 = np.float32


class PolarQuant:
    def __init__(self, bits: int, d: int, law: str = "beta") -> None:
        if d < 2 or d & (d - 1) or d > 512:
            raise TqError(f"PolarQuant needs a power-of-two dimension up to 512, got {d}")
        if law == "beta":
            c = beta_lloyd_max(bits, d).centroids
        elif law == "gaussian":
            c = gaussian_lloyd_max(bits).centroids / np.sqrt(d)
        else:
            raise TqError(f"unknown coordinate law {law!r} (beta or gaussian)")
        self.bits, self.d = bits, d
        self.centroids = c.astype(F32)
        self.bounds = ((c[:-1] + c[1:]) / 2).astype(F32)
        self.bits_per_value = bits + 32 / d

    def quantize(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, d) rows -> (norms float32 (n,), indices uint8 (n, d))."""
        x = np.asarray(rows, dtype=F32).reshape(-1, self.d)
        if x.shape[-1] != self.d:
            raise TqError(f"rows of {x.shape[-1]} values for PolarQuant of dimension {self.d}")
        u = rotate(x.astype(np.float64))
        norms = np.sqrt((u * u).sum(axis=1))
        unit = u / np.where(norms > 0, norms, 1.0)[:, None]
        idx = np.searchsorted(self.bounds, unit).astype(np.uint8)
        return norms.astype(F32), idx

    def dequantize(self, norms: np.ndarray, idx: np.ndarray) -> np.ndarray:
        u = norms[:, None].astype(np.float64) * self.centroids[idx]
        return rotate(u).astype(F32)

    def roundtrip(self, rows: np.ndarray) -> np.ndarray:
        return self.dequantize(*self.quantize(rows)).reshape(np.shape(rows))
