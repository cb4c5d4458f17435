"""Lloyd-Max codebooks: for a density (Gaussian, the Beta law of a unit vector's
coordinate), and the production int8 codebooks trained through the exact turbo rule.

Density design works on a fine grid with cumulative integrals (numpy only): a cell's
probability, first and second moments are differences of three cumulative sums, so one
Lloyd iteration costs a few interpolations however fine the grid is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tqllama.quant.hadamard import rotate
from tqllama.quant.turbo import (
    QK,
    QS,
    Codebook,
    TurboQuantMSE,
    best_codes,
    reference_code,
    sanitize,
    sub_block_scales,
)

GRID_POINTS = 400_001


@dataclass(frozen=True)
class LloydMax:
    centroids: np.ndarray  # ascending, float64
    mse: float  # E (X - Q(X))^2 under the density


def gaussian_grid(sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-12 * sigma, 12 * sigma, GRID_POINTS)
    return x, np.exp(-0.5 * (x / sigma) ** 2)


def beta_grid(d: int) -> tuple[np.ndarray, np.ndarray]:
    """One coordinate of a uniform unit vector in R^d: density ∝ (1 - x^2)^((d-3)/2)."""
    x = np.linspace(-1.0, 1.0, GRID_POINTS)
    return x, np.clip(1.0 - x * x, 0.0, None) ** ((d - 3) / 2)


def lloyd_max(x: np.ndarray, pdf: np.ndarray, levels: int, tol: float = 1e-13) -> LloydMax:
    """Lloyd-Max quantizer with `levels` levels for the (unnormalized) density on grid x."""
    w = np.empty_like(pdf)  # trapezoid weights
    dx = np.diff(x)
    w[:] = 0.0
    w[:-1] += dx / 2
    w[1:] += dx / 2
    p = pdf * w
    p /= p.sum()
    cp, c1, c2 = (np.concatenate(([0.0], np.cumsum(p * x**k))) for k in range(3))
    # Moments up to a cut point t: interpolate the cumulative sums at t (edges between
    # grid points, so the cumulative arrays are indexed one ahead of x).
    edges = np.concatenate(([x[0]], (x[:-1] + x[1:]) / 2, [x[-1]]))

    def cells(bounds: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(np.diff(np.interp(bounds, edges, c)) for c in (cp, c1, c2))

    cdf = np.cumsum(p)
    c = np.interp((np.arange(levels) + 0.5) / levels, cdf, x)  # start at the quantiles
    for _ in range(200_000):
        bounds = np.concatenate(([x[0]], (c[:-1] + c[1:]) / 2, [x[-1]]))
        m0, m1, _m2 = cells(bounds)
        new = m1 / m0
        if np.abs(new - c).max() < tol:
            c = new
            break
        c = new
    bounds = np.concatenate(([x[0]], (c[:-1] + c[1:]) / 2, [x[-1]]))
    m0, m1, m2 = cells(bounds)
    mse = float(np.sum(m2 - 2 * c * m1 + c * c * m0))
    return LloydMax(c, mse)


def gaussian_lloyd_max(bits: int) -> LloydMax:
    return lloyd_max(*gaussian_grid(), 1 << bits)


def beta_lloyd_max(bits: int, d: int) -> LloydMax:
    return lloyd_max(*beta_grid(d), 1 << bits)


# ---- production codebooks: trained through the exact turbo rule ---------------------


def training_blocks(n_blocks: int, seed: int, log_std: bool = True) -> np.ndarray:
    """Rotated Gaussian blocks of 64, float32; row std log-uniform over 1e-2..1e2."""
    rng = np.random.default_rng(seed)
    x = rotate(rng.standard_normal((n_blocks, QK)))
    if log_std:
        x *= 10.0 ** rng.uniform(-2.0, 2.0, size=(n_blocks, 1))
    return x.astype(np.float32)


def relative_mse(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over rows of ||x - y||^2 / ||x||^2: MSE per value relative to the row's
    variance (the rows are zero-mean)."""
    x64 = x.astype(np.float64)
    err = ((x64 - y) ** 2).sum(axis=-1)
    return float(np.mean(err / (x64**2).sum(axis=-1)))


def _quantizer(values: np.ndarray, search: tuple[int, int]) -> TurboQuantMSE:
    """The exact turbo rule with a candidate codebook (float values allowed)."""
    return TurboQuantMSE(len(values).bit_length() - 1, Codebook(values, search))


def codebook_mse(values: np.ndarray, search: tuple[int, int], x: np.ndarray) -> float:
    q = _quantizer(values, search)
    return relative_mse(x, q.roundtrip(x))


def _symmetric(c: np.ndarray) -> np.ndarray:
    return (c - c[::-1]) / 2


def _lloyd_step(values: np.ndarray, search: tuple[int, int], x: np.ndarray) -> np.ndarray:
    """One Lloyd update for a fixed assignment: c_i = sum(d x) / sum(d^2) over its cell,
    with the rows weighted by 1 / row variance (the objective is relative MSE)."""
    s, idx = _quantizer(values, search).quantize_blocks(x)
    d = np.repeat(sub_block_scales(s).astype(np.float64), QS, axis=1).reshape(-1)
    wrow = 1.0 / np.maximum((x.astype(np.float64) ** 2).mean(axis=1), 1e-300)
    w = np.repeat(wrow, QK)
    flat = idx.reshape(-1)
    xv = x.reshape(-1).astype(np.float64)
    num = np.bincount(flat, weights=w * d * xv, minlength=len(values))
    den = np.bincount(flat, weights=w * d * d, minlength=len(values))
    new = np.where(den > 0, num / np.maximum(den, 1e-300), values)
    return _symmetric(np.sort(new))


def delta_histogram(values: np.ndarray, x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """How often each delta in lo..hi is the best of the search (the window's location)."""
    cb = Codebook(values, (lo, hi))
    xt = np.ascontiguousarray(sanitize(x).reshape(-1, QS).T)
    k = best_codes(xt, cb)
    k_ref = reference_code(np.abs(xt).max(axis=0), cb)
    return np.bincount(np.clip(k - k_ref - lo, 0, hi - lo), minlength=hi - lo + 1)


def best_window(hist: np.ndarray, lo: int, width: int) -> tuple[int, int]:
    """The `width` consecutive deltas that cover the most of the histogram."""
    sums = np.convolve(hist, np.ones(width, dtype=np.int64), mode="valid")
    start = lo + int(np.argmax(sums))
    return start, start + width - 1


def round_int8(values: np.ndarray) -> np.ndarray:
    """Scale so the largest |value| is 127 and round to integers (kept symmetric)."""
    c = np.round(values / np.abs(values).max() * 127)
    return _symmetric(c)


def integer_search(
    values: np.ndarray, search: tuple[int, int], x: np.ndarray, log: list[str]
) -> tuple[np.ndarray, float]:
    """Coordinate descent on symmetric int8 pairs: move each positive value by +-1 while the
    exact quantizer's MSE on x falls (the largest stays at 127)."""
    v = values.astype(np.float64).copy()
    n = len(v)
    best = codebook_mse(v, search, x)
    improved = True
    while improved:
        improved = False
        for i in range(n // 2, n - 1):  # the positive half, except the 127 at the end
            for step in (1, -1):
                while True:
                    trial = v.copy()
                    trial[i] += step
                    trial[n - 1 - i] -= step
                    if not np.all(np.diff(trial) > 0):
                        break
                    mse = codebook_mse(trial, search, x)
                    if mse >= best:
                        break
                    v, best, improved = trial, mse, True
                    log.append(f"  value {int(v[i])}: {best:.6f}")
    return v, best


@dataclass(frozen=True)
class TrainedCodebook:
    bits: int
    values: tuple[int, ...]
    search: tuple[int, int]
    train_mse: float


def train_codebook(
    bits: int,
    n_blocks: int = 20_000,
    seed: int = 1,
    width: int = 9,
    iterations: int = 8,
    log: list[str] | None = None,
) -> TrainedCodebook:
    """Lloyd iterations through the exact scale rule, then int8 rounding and a local
    integer search; the search window is the `width` deltas the rule picks most often."""
    log = [] if log is None else log
    x = training_blocks(n_blocks, seed)
    v = gaussian_lloyd_max(bits).centroids
    v = v / np.abs(v).max() * 127
    wide = (-48, 16)
    window = best_window(delta_histogram(v, x, *wide), wide[0], width)
    for it in range(iterations):
        v = _lloyd_step(v, window, x)
        v = v / np.abs(v).max() * 127
        # The window moves little between iterations: look a few steps either side only.
        near = (window[0] - 4, window[1] + 4)
        window = best_window(delta_histogram(v, x, *near), near[0], width)
        log.append(f"lloyd {it}: window {window} mse {codebook_mse(v, window, x):.6f}")
    vi = round_int8(v)
    log.append(f"rounded: {vi.astype(int).tolist()} mse {codebook_mse(vi, window, x):.6f}")
    vi, mse = integer_search(vi, window, x, log)
    # The most frequent window is nearly, not always, the best one: slide it while the
    # MSE falls.
    for step in (-1, 1):
        while True:
            trial = (window[0] + step, window[1] + step)
            trial_mse = codebook_mse(vi, trial, x)
            log.append(f"window {trial}: mse {trial_mse:.6f}")
            if trial_mse >= mse:
                break
            window, mse = trial, trial_mse
    return TrainedCodebook(bits, tuple(int(a) for a in vi), window, mse)
