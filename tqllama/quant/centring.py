"""Key centring as a turbo K cache applies it (docs/FORMAT.md "Key centring"), in NumPy.

The cache stores k - c, one c per layer and KV head shared by all its keys: attention is
unchanged (q . c moves every logit of a query alike) while the quantizer sees only what
varies. c comes from the first ubatch written into an empty cache. In a RoPE pair a key
whose pre-RoPE part has the constant mean m has the mean m e^(i theta p) at position p: the
ubatch's mean is m times the mean phase of its positions, and the constant closest to the
keys over the cache's span [0, span) is m times the mean phase over the span. So c is the
ubatch's mean times f = phase(span) / phase(ubatch) in each pair, f = 0 where the ubatch's
phases cancel out (|phase(ubatch)| < 1/2), f = 1 outside RoPE. At short spans f is about 1
in the slow pairs and 0 in the fast ones; at long spans the slow pairs shrink towards their
mean over the span instead of keeping a window's mean that is stale later on.

This mirrors llama_kv_cache::set_input_k_center in patches/0013-kv-key-centring.patch for
NORM-mode RoPE (llama): pair i is channels 2i and 2i+1.
"""

from __future__ import annotations

import numpy as np

MIN_PHASE = 0.5  # a pair whose ubatch phases average to less says too little about m


def phase_mean(theta: np.ndarray, n: float) -> np.ndarray:
    """The mean of exp(i theta p) over p = 0 .. n-1 (1 where theta = 0)."""
    half = np.asarray(theta, dtype=np.float64) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        amp = np.where(np.abs(np.sin(half)) < 1e-12, 1.0, np.sin(n * half) / (n * np.sin(half)))
    return amp * np.exp(1j * half * 2 * (n - 1) / 2)


def centre_factors(head_dim: int, rope_base: float, span: int,
                   positions: np.ndarray) -> np.ndarray:
    """f per RoPE pair (complex): the ubatch at `positions` to the span [0, span)."""
    theta = rope_base ** (-2.0 * np.arange(head_dim // 2) / head_dim)
    ubatch = np.exp(1j * np.outer(theta, np.asarray(positions, dtype=np.float64))).mean(axis=1)
    ok = np.abs(ubatch) >= MIN_PHASE
    return np.where(ok, phase_mean(theta, span) / np.where(ok, ubatch, 1.0), 0.0)


def centre_map(head_dim: int, rope_base: float, span: int, positions: np.ndarray) -> np.ndarray:
    """The (head_dim, head_dim) real map from the ubatch's mean key to the centre."""
    f = centre_factors(head_dim, rope_base, span, positions)
    out = np.zeros((head_dim, head_dim))
    for i, z in enumerate(f):
        out[2 * i: 2 * i + 2, 2 * i: 2 * i + 2] = [[z.real, -z.imag], [z.imag, z.real]]
    return out


def centre_keys(k: np.ndarray, rope_base: float, span: int, first: int) -> np.ndarray:
    """(layers, tokens, kv_heads, head_dim) post-RoPE keys -> what the cache quantizes, the
    centre set by the first `first` tokens (the first ubatch, positions 0 .. first-1)."""
    mean = k[:, :first].astype(np.float64).mean(axis=1, keepdims=True)
    c = mean @ centre_map(k.shape[-1], rope_base, span, np.arange(first)).T
    return (k - c).astype(np.float32)
