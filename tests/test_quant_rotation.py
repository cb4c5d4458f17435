"""The sign stream and the Walsh-Hadamard rotation (docs/FORMAT.md, "Rotation")."""

from __future__ import annotations

import numpy as np
import pytest

from tqllama.errors import TqError
from tqllama.quant import hadamard, signs


def test_splitmix64_first_outputs() -> None:
    # Recomputed independently from the FORMAT.md pseudo-code with 64-bit masks.
    state = int.from_bytes(b"tqllama!", "big")
    expected = []
    for _ in range(8):
        state = (state + 0x9E3779B97F4A7C15) % 2**64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        z ^= z >> 31
        expected.append(-1 if z >> 63 else 1)
    assert list(signs.SIGNS[:8]) == expected


def test_stream_lengths_and_continuation() -> None:
    stream = signs.splitmix64_signs(640)
    assert list(signs.SIGNS) == stream[:512]
    assert list(signs.QJL_SIGNS) == stream[512:]
    d2, d3 = signs.qjl_signs()
    assert d2.tolist() == stream[512:576] and d3.tolist() == stream[576:640]
    assert set(stream) == {-1, 1}
    # A fair coin: 640 draws stay well inside +-5 sigma of zero.
    assert abs(sum(stream)) < 5 * 26


@pytest.mark.parametrize("n", [64, 128, 256])
def test_fwht_matches_dense_sylvester(n: int) -> None:
    h = hadamard.hadamard_matrix(n)
    assert h[0, 0] == pytest.approx(1 / np.sqrt(n))
    half = n // 2
    np.testing.assert_allclose(h[:half, half:], h[:half, :half])
    np.testing.assert_allclose(h[half:, half:], -h[:half, :half])
    x = np.random.default_rng(n).standard_normal((7, n))
    np.testing.assert_allclose(hadamard.fwht(x), x @ h, atol=1e-12)


@pytest.mark.parametrize("n", [64, 128, 256])
def test_rotation_is_d_h_d_and_its_own_inverse(n: int) -> None:
    d = np.diag(signs.rotation_signs(n).astype(np.float64))
    r = d @ hadamard.hadamard_matrix(n) @ d
    np.testing.assert_allclose(r, r.T)
    np.testing.assert_allclose(r @ r, np.eye(n), atol=1e-12)
    x = np.random.default_rng(n + 1).standard_normal((5, 3, n))
    np.testing.assert_allclose(hadamard.rotate(x), x @ r, atol=1e-12)
    np.testing.assert_allclose(hadamard.rotate(hadamard.rotate(x)), x, atol=1e-12)


def test_fwht_keeps_float32() -> None:
    x = np.ones((2, 64), dtype=np.float32)
    y = hadamard.fwht(x)
    assert y.dtype == np.float32
    assert y[0, 0] == pytest.approx(8.0)
    assert np.all(y[:, 1:] == 0)


def test_bad_sizes() -> None:
    with pytest.raises(TqError):
        hadamard.fwht(np.zeros((1, 48)))
    with pytest.raises(TqError):
        signs.rotation_signs(1024)
