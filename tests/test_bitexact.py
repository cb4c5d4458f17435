"""The C quantizers of the built llama.cpp and the NumPy reference agree byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tqllama.ggmllib import GgmlBase
from tqllama.quant.turbo import TurboQuantMSE

pytestmark = pytest.mark.slow

TURBO = {"turbo2": 2, "turbo3": 3, "turbo4": 4}


@pytest.fixture(scope="module")
def ggml(built_tools) -> GgmlBase:
    return GgmlBase(Path(built_tools.libraries["libggml-base.so"]))


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


@pytest.mark.parametrize("name", list(TURBO))
@pytest.mark.parametrize("width", [64, 128, 256])
def test_random_rows_byte_exact(ggml: GgmlBase, name: str, width: int) -> None:
    rng = np.random.default_rng(width + TURBO[name])
    rows = random_rows(rng, 4000, width)
    c_bytes = ggml.quantize(name, rows)
    assert c_bytes == TurboQuantMSE(TURBO[name]).quantize(rows)
    c_values = ggml.dequantize(name, c_bytes, rows.size)
    ref_values = TurboQuantMSE(TURBO[name]).dequantize(c_bytes, rows.size)
    np.testing.assert_array_equal(c_values, ref_values)


@pytest.mark.parametrize("name", list(TURBO))
def test_adversarial_rows_byte_exact(ggml: GgmlBase, name: str) -> None:
    rows = adversarial_rows(np.random.default_rng(7))
    ref = TurboQuantMSE(TURBO[name])
    c_bytes = ggml.quantize(name, rows)
    for i in range(len(rows)):
        one = ggml.quantize(name, rows[i : i + 1])
        assert one == ref.quantize(rows[i : i + 1]), f"row {i} differs"
    values = ggml.dequantize(name, c_bytes, rows.size)
    assert np.all(np.isfinite(values))
