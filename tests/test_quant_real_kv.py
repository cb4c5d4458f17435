"""turbo on real K and V rows of SmolLM2-135M (slow: a NumPy forward pass, ~1-2 min).

The rows come from tqllama.quant.llama_forward over the first 512 tokens of the
wikitext-2 test set (scripts/dump_kv.py caches them; this test makes them when missing).
After the turbo rotation R_64 = D H D they should behave like the Gaussian rows the
codebooks were trained on: relative MSE within 10% of the Gaussian figure.
"""

from __future__ import annotations

import numpy as np
import pytest

from tqllama import assets
from tqllama.quant.codebook import relative_mse, training_blocks
from tqllama.quant.hadamard import rotate
from tqllama.quant.llama_forward import collect_kv, kv_cache_path, load, save
from tqllama.quant.turbo import TurboQuantMSE

pytestmark = pytest.mark.slow
N_TOKENS = 512


@pytest.fixture(scope="module")
def kv() -> dict[str, np.ndarray]:
    model = assets.resolve_model(None)
    path = kv_cache_path(model, N_TOKENS)
    if not path.exists():
        dump = collect_kv(model, assets.fetch_text(), N_TOKENS)
        save(dump, path)
    dump = load(path)
    assert np.exp(dump.nll.mean()) < 40  # the forward pass is sane (llama.cpp: about 22)
    return {
        "K": rotate(dump.k.reshape(-1, 64).astype(np.float64)).astype(np.float32),
        "V": rotate(dump.v.reshape(-1, 64).astype(np.float64)).astype(np.float32),
    }


@pytest.mark.parametrize("bits", [4, 3, 2])
def test_real_rows_match_gaussian_figure(kv: dict[str, np.ndarray], bits: int) -> None:
    q = TurboQuantMSE(bits)
    gauss = training_blocks(100_000, seed=77)
    expected = relative_mse(gauss, q.roundtrip(gauss))
    for name, rows in kv.items():
        mse = relative_mse(rows, q.roundtrip(rows))
        assert abs(mse / expected - 1) < 0.10, f"{name}: {mse:.5f} vs Gaussian {expected:.5f}"
