"""Lloyd-Max design, PolarQuant against the paper, and the llama.cpp baselines."""

from __future__ import annotations

import numpy as np
import pytest

from tqllama.quant import baselines, tables
from tqllama.quant.codebook import (
    beta_lloyd_max,
    codebook_mse,
    gaussian_lloyd_max,
    relative_mse,
    round_int8,
    training_blocks,
)
from tqllama.quant.polar import PolarQuant

# Published Gaussian Lloyd-Max centroids (positive half) and MSE (docs: anchors).
GAUSS = {
    1: ([0.7979], 0.3634),
    2: ([0.4528, 1.5104], 0.1175),
    3: ([0.2451, 0.7560, 1.3439, 2.1519], 0.03455),
    4: ([0.1284, 0.3880, 0.6568, 0.9423, 1.2562, 1.6180, 2.0690, 2.7326], 0.00950),
}


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_gaussian_lloyd_max(bits: int) -> None:
    lm = gaussian_lloyd_max(bits)
    half, mse = GAUSS[bits]
    np.testing.assert_allclose(lm.centroids[len(half) :], half, atol=1e-4)
    assert lm.mse == pytest.approx(mse, rel=1e-3)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_beta_law_tends_to_gaussian(bits: int) -> None:
    g = GAUSS[bits][1]
    small, large = (d * beta_lloyd_max(bits, d).mse for d in (64, 512))
    assert small < large < g * 1.001  # lighter tails than the Gaussian: lower MSE
    assert large == pytest.approx(g, rel=0.01)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_polar_quant_reproduces_theory(bits: int) -> None:
    d = 64
    u = np.random.default_rng(bits).standard_normal((20_000, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    p = PolarQuant(bits, d)
    mse = np.mean(np.sum((u - p.roundtrip(u.astype(np.float32))) ** 2, axis=1))
    assert mse == pytest.approx(d * beta_lloyd_max(bits, d).mse, rel=0.03)
    assert 4.0**-bits < mse


def test_committed_codebooks_meet_their_record() -> None:
    """The tables' design record (tables.py docstring), on 20k fresh log-std rows."""
    x = training_blocks(20_000, seed=4242)
    record = {4: 0.00593, 3: 0.0255, 2: 0.1056, 1: 0.3549}
    for bits, want in record.items():
        mse = codebook_mse(np.array(tables.KVALUES[bits], float), tables.SEARCH[bits], x)
        assert mse == pytest.approx(want, rel=0.02)


def test_round_int8_is_symmetric_and_full_scale() -> None:
    v = round_int8(np.array([-2.7, -0.4, 0.4, 2.7]))
    np.testing.assert_array_equal(v, [-127, -19, 19, 127])


def test_baselines_on_gaussian_rows() -> None:
    x = training_blocks(20_000, seed=5, log_std=False)
    mse = {name: relative_mse(x, fn(x)) for name, (fn, _) in baselines.BASELINES.items()}
    assert mse["q8_0"] < 5e-5
    assert mse["q4_0"] == pytest.approx(0.00738, rel=0.03)  # anchors: rotated q4_0
    assert mse["iq4_nl"] < mse["iq4_nl_kv"] < mse["q4_0"]
    # a fifth bit quarters the error; q5_1's offset buys a little more
    assert mse["q8_0"] < mse["q5_1"] < mse["q5_0"] == pytest.approx(mse["q4_0"] / 4, rel=0.1)


def test_q5_1_block_by_hand() -> None:
    x = np.arange(32, dtype=np.float32) - 3  # min -3, d = 31/31 = 1: integers are exact
    np.testing.assert_array_equal(baselines.q5_1(x), x)


def test_q4_0_block_by_hand() -> None:
    x = np.zeros(32, np.float32)
    x[0], x[1], x[2] = -8.0, 4.0, 1.0  # d = max / -8 = 1: integers are exact
    np.testing.assert_array_equal(baselines.q4_0(x), x)
    x[0], x[3] = 16.0, -16.0  # d = -2: +16 is index 0, -16 would be 16 and clamps to 15
    y = baselines.q4_0(x)
    assert y[0] == 16.0 and y[3] == -14.0


def test_iq4_nl_exact_block() -> None:
    x = baselines.KVALUES_IQ4NL[np.arange(32) % 16] * np.float32(0.5)
    np.testing.assert_allclose(baselines.iq4_nl(x), x, rtol=1e-3)
