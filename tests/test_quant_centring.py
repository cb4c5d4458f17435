"""The NumPy mirror of key centring (tqllama/quant/centring.py): the constant centre is the
constant closest to the keys over the cache's span, estimated from the first ubatch's mean
key; the position-aware centre is the pre-RoPE mean turned to each key's position, and
attention's term puts back exactly what it took off."""

from __future__ import annotations

import numpy as np

from tqllama.quant.centring import (
    attention_term,
    centre_factors,
    centre_keys,
    centre_map,
    phase_mean,
    position_centre,
    position_centre_keys,
)


def _rope(x: np.ndarray, pos: np.ndarray, base: float) -> np.ndarray:
    """NORM-mode RoPE of (tokens, head_dim) rows at `pos`."""
    theta = base ** (-2.0 * np.arange(x.shape[-1] // 2) / x.shape[-1])
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * np.outer(pos, theta))
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def test_phase_mean_is_the_mean_of_the_phases() -> None:
    theta = np.array([0.0, 1e-3, 0.1, 2.0])
    for n in (1, 7, 512):
        direct = np.exp(1j * np.outer(theta, np.arange(n))).mean(axis=1)
        np.testing.assert_allclose(phase_mean(theta, n), direct, atol=1e-12)


def test_slow_pairs_keep_the_mean_fast_pairs_drop_it() -> None:
    # SmolLM2: base 1e5, head 64. Over 512 positions the slowest pair barely turns (f ~ 1);
    # the fastest turns a radian per position: its phases cancel within any ubatch (f = 0)
    f = centre_factors(64, 1e5, span=512, positions=np.arange(512))
    assert abs(f[-1] - 1) < 1e-3 and f[0] == 0
    # a longer span shrinks the pairs that turn over it, and keeps fewer of them
    f8k = centre_factors(64, 1e5, span=8192, positions=np.arange(512))
    assert np.all(np.abs(f8k) <= np.abs(f) + 1e-9)
    assert np.count_nonzero(np.abs(f8k) > 0.5) < np.count_nonzero(np.abs(f) > 0.5)


def test_centre_is_the_best_constant_over_the_span() -> None:
    """Keys whose pre-RoPE part has a constant mean: the centre from the first 256 tokens is
    the mean of the keys over the whole span in every pair the ubatch can see, and centring
    with it leaves less energy than the first ubatch's own mean would."""
    rng = np.random.default_rng(0)
    span, first, base = 4096, 256, 1e5
    m = rng.standard_normal(64) * 3.0
    pos = np.arange(span)
    keys = _rope(m + 0.1 * rng.standard_normal((span, 64)), pos, base)
    k = keys[None, :, None, :].astype(np.float32)
    centred = centre_keys(k, base, span, first)[0, :, 0]
    c = keys - centred
    seen = np.repeat(np.abs(centre_factors(64, base, span, np.arange(first))) > 0, 2)
    np.testing.assert_allclose(c[0, seen], keys.mean(axis=0)[seen], atol=0.02)
    stale = keys - keys[:first].mean(axis=0)
    assert (centred**2).sum() < (stale**2).sum() < (keys**2).sum()


def test_map_is_block_diagonal_rotation_and_scale() -> None:
    a = centre_map(64, 1e5, 8192, np.arange(512))
    f = centre_factors(64, 1e5, 8192, np.arange(512))
    for i, z in enumerate(f):
        np.testing.assert_allclose(a[2 * i: 2 * i + 2, 2 * i: 2 * i + 2],
                                   [[z.real, -z.imag], [z.imag, z.real]])
    off = a.copy()
    for i in range(32):
        off[2 * i: 2 * i + 2, 2 * i: 2 * i + 2] = 0
    assert not off.any()


def _biased_keys(span: int, base: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keys whose pre-RoPE part is a constant mean plus noise a tenth of its size."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal(64) * 3.0
    return m, _rope(m + 0.1 * rng.standard_normal((span, 64)), np.arange(span), base)


def test_position_centre_finds_the_pre_rope_mean() -> None:
    m, keys = _biased_keys(4096, 1e5)
    est = position_centre(keys[None, :, None, :], 1e5, first=256)[0, 0]
    np.testing.assert_allclose(est, m, atol=0.03)


def test_position_centre_leaves_only_what_varies_at_any_length() -> None:
    """The constant centre keeps less of the mean the longer the span (its pairs turn);
    the position-aware one leaves the noise alone, about 0.1**2 of the mean's energy per
    channel, at 512 and at 4096 positions."""
    for span in (512, 4096):
        _, keys = _biased_keys(span, 1e5)
        k = keys[None, :, None, :].astype(np.float32)
        turned = position_centre_keys(k, 1e5, first=256)[0, :, 0]
        constant = centre_keys(k, 1e5, span, 256)[0, :, 0]
        noise = 0.1**2 * 64 * span
        assert (turned**2).sum() < 1.2 * noise
        assert (constant**2).sum() > 5 * (turned**2).sum()


def test_attention_term_puts_back_what_the_write_took_off() -> None:
    """q . k = q . (k - R(p) m) + q . R(p) m at every position, the term computed as the
    kernel does it (the query's pairs combined with m's, dotted with the cell's phases)."""
    rng = np.random.default_rng(1)
    _, keys = _biased_keys(2048, 1e4)
    stored = position_centre_keys(keys[None, :, None, :], 1e4, first=64)[0, :, 0]
    est = position_centre(keys[None, :, None, :], 1e4, first=64)[0, 0]
    q = rng.standard_normal(64)
    term = attention_term(q, est, 1e4, np.arange(2048))
    np.testing.assert_allclose(stored @ q + term, keys @ q, rtol=1e-5, atol=1e-4)


def test_neox_pairs_are_centred_in_their_own_layout() -> None:
    """qwen2's NEOX RoPE pairs channel i with i + head_dim/2: with neox the centre finds the
    pre-RoPE mean and leaves the noise; read as NORM pairs, the same keys keep most of it."""
    rng = np.random.default_rng(2)
    m = rng.standard_normal(64) * 3.0
    x = m + 0.1 * rng.standard_normal((1024, 64))
    theta = 1e4 ** (-2.0 * np.arange(32) / 64)
    z = (x[:, :32] + 1j * x[:, 32:]) * np.exp(1j * np.outer(np.arange(1024), theta))
    keys = np.concatenate([z.real, z.imag], axis=-1)[None, :, None, :]
    np.testing.assert_allclose(position_centre(keys, 1e4, first=256, neox=True)[0, 0], m,
                               atol=0.03)
    noise = 0.1**2 * 64 * 1024
    assert (position_centre_keys(keys, 1e4, first=256, neox=True) ** 2).sum() < 1.2 * noise
    assert (position_centre_keys(keys, 1e4, first=256) ** 2).sum() > 100 * noise
