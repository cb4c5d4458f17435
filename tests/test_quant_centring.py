"""The NumPy mirror of key centring (tqllama/quant/centring.py) keeps the channels
llama.cpp's llama_kv_k_center_mask keeps, and removes their first-ubatch mean only."""

from __future__ import annotations

import numpy as np

from tqllama.quant.centring import centre_keys, centre_mask


def test_mask_keeps_the_slow_pairs() -> None:
    # SmolLM2: base 1e5, head 64; pair i turns by base^(-i/32) * span rad over the span
    mask = centre_mask(64, 1e5, 512)
    assert mask.tolist() == [0.0] * 36 + [1.0] * 28  # pairs 18..31: 1e5^(-18/32)*512 = 0.77
    assert centre_mask(64, 1e5, 4096).sum() == 16  # a longer span keeps fewer
    assert centre_mask(64, 1e4, 512).sum() == 20  # a faster RoPE too
    assert centre_mask(64, 1e4, 10**6).sum() == 0  # pair 31 turns 133 rad: none


def test_centre_is_the_first_ubatch_mean_of_kept_channels() -> None:
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((2, 100, 3, 64)) + 5.0).astype(np.float32)
    out = centre_keys(k, 1e5, span=512, first=40)
    kept = centre_mask(64, 1e5, 512) == 1.0
    np.testing.assert_allclose(out[:, :40][..., kept].mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_array_equal(out[..., ~kept], k[..., ~kept])
    assert abs(out[:, 40:][..., kept].mean()) < 0.1  # the same offset for later tokens
