"""What the byte-exact checks share: the turbo types' bits, their NumPy reference
quantizers, and rows that probe the format's edges, the trellis types' too
(tests/test_bitexact.py on the CPU, tests/test_cuda_warp.py and tests/test_metal.py on
the GPU kernels' emulations)."""

from __future__ import annotations

import numpy as np

from tqllama.quant import qjl, tables, trellis
from tqllama.quant.turbo import TurboQuantMSE, scale_from_code

TURBO = {"turbo2": 2, "turbo3": 3, "turbo4": 4, "turbo5": 5,
         "turbo2_qjl": 2, "turbo3_qjl": 3, "turbo4_qjl": 4}


def reference(name: str) -> TurboQuantMSE | qjl.TurboQuant:
    bits = TURBO[name]
    return qjl.TurboQuant(bits) if name.endswith("_qjl") else TurboQuantMSE(bits)


def stage1_bits(name: str) -> int:
    """The bits of the scale search a type runs: its own, or its stage 1's."""
    return TURBO[name] - name.endswith("_qjl")


def random_rows(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """Gaussian rows whose scale spreads over 40 octaves, as K and V rows of real models do."""
    scale = 2.0 ** rng.uniform(-24, 16, size=(n, 1))
    return (rng.standard_normal((n, width)) * scale).astype(np.float32)


def adversarial_rows(rng: np.random.Generator) -> np.ndarray:
    """Rows at the edges of the format: zeros, outliers, denormals, ties, NaN and Inf."""
    f32 = np.finfo(np.float32)
    rows = [
        np.zeros(64),
        np.full(64, 65504.0),
        np.full(64, -1e30),
        np.r_[np.zeros(63), 1e4],
        np.r_[np.full(32, 1e-3), np.full(32, 1e3)],  # sub-blocks 20 octaves apart
        np.r_[np.zeros(32), rng.standard_normal(32)],  # one zero sub-block
        np.full(64, f32.smallest_subnormal),
        np.full(64, f32.tiny) * rng.standard_normal(64),
        rng.standard_normal(64) * 1e-38,
        np.r_[np.nan, np.inf, -np.inf, rng.standard_normal(61)],
        np.full(64, np.nan),
        np.round(rng.standard_normal(64) * 4) / 4,  # many exact ties between candidates
        np.arange(64) - 31.5,
    ]
    return np.asarray(rows, dtype=np.float32)


def tie_rows(bits: int) -> np.ndarray:
    """Constant rows halfway between the reconstructions of two candidate scales: the
    scale search meets exact ties there (turbo3, turbo4), which the first candidate wins."""
    kv = tables.kvalues(bits).astype(np.float32)
    mids = [(scale_from_code(k) * a + scale_from_code(k + dk) * b) / np.float32(2)
            for k in range(200, 216) for dk in range(1, 9) for a in kv for b in kv]
    mids = np.unique(np.array([m for m in mids if m > 0], dtype=np.float32))
    return np.repeat(mids[:, None], 64, axis=1)


def boundary_rows(bits: int, rng: np.random.Generator) -> np.ndarray:
    """Rows whose amax / CBMAX is exactly M[i] * 2^e: step 2's `M[i] >= u` at equality."""
    cbmax = np.float32(np.abs(tables.kvalues(bits)).max())
    mant = tables.scale_mant().astype(np.float32)
    t = (mant[None, :] * np.float32(2.0) ** np.arange(-20, 10, dtype=np.float32)[:, None]).ravel()
    amax = (t * cbmax).astype(np.float32)
    amax = amax[amax / cbmax == t]
    rows = rng.uniform(-1, 1, size=(len(amax), 64)).astype(np.float32) * amax[:, None]
    rows[:, 0], rows[:, 40] = amax, -amax
    return rows


def trellis_rows(name: str, rng: np.random.Generator) -> np.ndarray:
    """Rows at the trellis format's edges (docs/FORMAT-TRELLIS.md): blocks that a path
    reconstructs exactly (zero-error paths: the Viterbi search meets ties at every step),
    constant rows whose RMS is exactly a scale mantissa times a power of two (step 2's
    `M[i] >= u` at equality), and rows whose single spike trips the amax floor."""
    tq = trellis.TrellisQuant(name)
    raw = rng.integers(0, 256, size=(64, tq.block_bytes), dtype=np.uint8)
    raw[:, 1] &= 0xFC  # scale codes 128..255 (bits 8 and 9 clear, bit 7 set below)
    raw[:, 0] |= 0x80
    exact = tq.dequantize(raw.tobytes(), 64 * 64).reshape(64, 64)
    mant = tables.scale_mant().astype(np.float32)
    consts = (mant[None, :] * np.float32(2.0) ** np.arange(-12, 12, 3, dtype=np.float32)[:, None])
    constant = np.repeat(consts.reshape(-1, 1), 64, axis=1)
    spikes = rng.standard_normal((32, 64)).astype(np.float32) * np.float32(1e-3)
    spikes[np.arange(32), rng.integers(0, 64, 32)] = np.float32(50.0)
    return np.concatenate((exact, constant, spikes)).astype(np.float32)


def trellis_edge_rows(rng: np.random.Generator) -> np.ndarray:
    """Blocks at steps 0-2's edges besides adversarial_rows': a subnormal amax (frexp and
    ldexp on the bits), one subnormal or one huge value among zeros, halves 2^40 apart, NaN
    and Inf among subnormals, a spike of each sign, constant rows of each sign."""
    sub = np.finfo(np.float32).smallest_subnormal
    rows = [
        np.r_[np.zeros(63), sub],
        np.r_[np.zeros(63), 65504.0],
        np.r_[np.zeros(32), np.full(32, 1e-40)],
        np.r_[np.full(32, 65504.0), np.full(32, 1e-40)],
        np.r_[np.full(32, 1e6), np.full(32, 1e-6)],
        rng.standard_normal(64) * 1e-39,
        rng.standard_normal(64) * 1e-44,
        np.r_[np.nan, np.inf, -np.inf, rng.standard_normal(61) * 1e-41],
        np.r_[-np.inf, np.zeros(63)],
        np.r_[rng.standard_normal(31) * 1e-3, -50.0, rng.standard_normal(32) * 1e-3],
        np.r_[rng.standard_normal(63), 1e30],
        np.full(64, 0.75),
        np.full(64, -3.0),
    ]
    return np.asarray(rows, dtype=np.float32)
