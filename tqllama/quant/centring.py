"""Key centring as a turbo K cache applies it (docs/FORMAT.md "Key centring"), in NumPy.

Two centres, as llama.cpp's cache chooses them (patches 0013 and 0021):

Position-aware (the CPU's default). A key whose pre-RoPE part has the mean m has the mean
R(p) m at position p (R(p) turns RoPE pair i by p theta_i). The cache stores k - R(p) m,
m the mean of the first ubatch's keys turned back to position 0, and flash attention adds
q . R(p) m back to every logit: attention is exact at every position while the quantizer
sees only what varies. Per key the term is one dot of the query's pairs combined with m's
(`query_term`) with the key's (cos, sin) of p theta_i: what ggml's CPU kernel computes.

Constant (GPU builds, TQLLAMA_TURBO_CENTER=span). The cache stores k - c, one c per layer
and KV head shared by all its keys: q . c moves every logit of a query alike, which softmax
ignores. c is the first ubatch's mean times f = phase(span) / phase(ubatch) in each pair,
f = 0 where the ubatch's phases cancel out (|phase(ubatch)| < 1/2), f = 1 outside RoPE: the
constant closest to the keys over the cache's span [0, span). At short spans f is about 1
in the slow pairs and 0 in the fast ones; at long spans the slow pairs shrink towards their
mean over the span, and the pairs that turn keep their mean in the quantizer's input.

RoPE pair i is channels 2i and 2i+1 in NORM mode (llama) and channels i and i + head_dim/2
in NEOX mode (qwen2: `neox=True` where a function takes it); theta_i = base^(-2i/head_dim).
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


def rope_theta(head_dim: int, rope_base: float) -> np.ndarray:
    """theta_i = base^(-2i/head_dim), the turn of RoPE pair i per position."""
    return rope_base ** (-2.0 * np.arange(head_dim // 2) / head_dim)


def centre_factors(head_dim: int, rope_base: float, span: int,
                   positions: np.ndarray) -> np.ndarray:
    """f per RoPE pair (complex): the ubatch at `positions` to the span [0, span)."""
    theta = rope_theta(head_dim, rope_base)
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


def rope_pairs(x: np.ndarray, neox: bool = False) -> np.ndarray:
    if neox:
        half = x.shape[-1] // 2
        return x[..., :half] + 1j * x[..., half:]
    return x[..., 0::2] + 1j * x[..., 1::2]


def rope_channels(z: np.ndarray, neox: bool = False) -> np.ndarray:
    if neox:
        return np.concatenate([z.real, z.imag], axis=-1)
    out = np.empty((*z.shape[:-1], 2 * z.shape[-1]))
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def phases(head_dim: int, rope_base: float, positions: np.ndarray) -> np.ndarray:
    """exp(i p theta_i): (positions, head_dim // 2) complex."""
    theta = rope_theta(head_dim, rope_base)
    return np.exp(1j * np.outer(np.asarray(positions, dtype=np.float64), theta))


def position_centre(k: np.ndarray, rope_base: float, first: int,
                    neox: bool = False) -> np.ndarray:
    """m: the mean of the first `first` keys (positions 0 .. first-1) turned back to
    position 0; k is (layers, tokens, kv_heads, head_dim) post-RoPE, m (layers, kv_heads,
    head_dim)."""
    turn = phases(k.shape[-1], rope_base, np.arange(first))[None, :, None, :]
    back = rope_pairs(k[:, :first].astype(np.float64), neox) / turn
    return rope_channels(back.mean(axis=1), neox)


def position_centre_keys(k: np.ndarray, rope_base: float, first: int,
                         neox: bool = False) -> np.ndarray:
    """What the CPU's cache quantizes: k - R(p) m at each key's position p = its index."""
    m = position_centre(k, rope_base, first, neox)
    turn = phases(k.shape[-1], rope_base, np.arange(k.shape[1]))[None, :, None, :]
    return (k - rope_channels(rope_pairs(m, neox)[:, None] * turn, neox)).astype(np.float32)


def query_term(q: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per RoPE pair (x a + y b, y a - x b) for the query's pair (x, y) and m's (a, b), laid
    out (cos, sin) like the cells' phases: q . R(p) m is its dot with (cos p theta_i,
    sin p theta_i), as ggml_flash_attn_ext_set_k_center computes it."""
    x, y = q[..., 0::2], q[..., 1::2]
    a, b = m[..., 0::2], m[..., 1::2]
    return rope_channels((x * a + y * b) + 1j * (y * a - x * b))


def attention_term(q: np.ndarray, m: np.ndarray, rope_base: float,
                   positions: np.ndarray) -> np.ndarray:
    """q . R(p) m for one query (head_dim,) against keys at `positions`: (len(positions),)."""
    tab = rope_channels(phases(q.shape[-1], rope_base, positions))
    return tab @ query_term(q, m)
