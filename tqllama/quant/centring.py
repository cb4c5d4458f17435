"""Key centring as a turbo K cache applies it (docs/FORMAT.md "Key centring"), in NumPy.

The cache stores k - c: c is the mean key, per layer and KV head, of the first ubatch
written into the empty cache, kept only in the RoPE channel pairs whose angle turns by at
most 1 rad over the cache's span (elsewhere the mean of rotated keys is not a constant
offset). Attention is unchanged (q . c moves every logit of a query alike); the quantizer
sees only what varies. This mirrors llama_kv_k_center_mask in patches/0013-kv-key-centring.patch for
NORM-mode RoPE (llama): pair i is channels 2i and 2i+1.
"""

from __future__ import annotations

import numpy as np


def centre_mask(head_dim: int, rope_base: float, span: int) -> np.ndarray:
    """1.0 for the channels the centre keeps, 0.0 elsewhere."""
    i = np.arange(head_dim // 2)
    keep = (rope_base ** (-2.0 * i / head_dim) * span <= 1.0).astype(np.float32)
    return np.repeat(keep, 2)


def centre_keys(k: np.ndarray, rope_base: float, span: int, first: int) -> np.ndarray:
    """(layers, tokens, kv_heads, head_dim) post-RoPE keys -> what the cache quantizes, with
    the centre taken over the first `first` tokens (the first ubatch)."""
    c = k[:, :first].astype(np.float64).mean(axis=1, keepdims=True)
    return (k - c * centre_mask(k.shape[-1], rope_base, span)).astype(np.float32)
