"""The simulated cache of tqlab/cache_sim.py: treatments parsed, and what they cost on real models.

The slow cases run the NumPy forward pass on 512 tokens of WikiText-2: SmolLM2 (llama,
NORM RoPE) and Qwen2.5-Coder-0.5B (qwen2: NEOX RoPE and Q/K/V biases, which the exact pass
must get right for its perplexity to be sane).
"""

from __future__ import annotations

import numpy as np
import pytest

from tqlab.bpe import BpeTokenizer
from tqlab.cache_sim import (
    ROUND_TRIPS,
    Treatment,
    answer_log_probs,
    butterflies,
    chunk_klds,
    key_scales,
    round_trip,
)
from tqlab.llama_forward import LlamaGguf, tokenize
from tqllama import assets
from tqllama.bench.retrieval import FILLER, NEEDLE, QUESTION, Trial, prompt_tokens
from tqllama.errors import TqError
from tqllama.quant.hadamard import rotate

N_TOKENS = 512


def test_treatments_parse() -> None:
    assert Treatment.parse("k=turbo4,sink=1,alpha=0.5") == Treatment("turbo4", "f32", 1, 0.5)
    assert Treatment.parse("v=q8_0") == Treatment("f32", "q8_0")
    for spec in ("k=turbo4,v=f32,sink=1,alpha=0.5", "k=f32,v=turbo4,vc=1",
                 "k=turbo4,v=f32,span=512", "k=f32,v=turbo4,classes=4",
                 "k=turbo4,v=turbo4,rowsigns=1", "k=turbo4,v=f32,kclasses=2"):
        assert Treatment.parse(spec).spec() == spec


@pytest.mark.parametrize("spec", ["k=turbo6", "k=turbo4,x=1", "sink", "v="])
def test_bad_treatments_say_what_to_use(spec: str) -> None:
    with pytest.raises(TqError, match=r"k=TYPE|one of"):
        Treatment.parse(spec)


def test_cell_classes_make_unlike_errors_for_like_rows() -> None:
    """64 copies of one row: one class gives one error 64 times (the mean error is the error),
    C classes C unlike errors whose mean has about 1/C of the power; each row's own error
    stays as large, and one class is the plain round trip."""
    rng = np.random.default_rng(1)
    rows = np.repeat(rng.standard_normal((1, 2, 64)).astype(np.float32), 64, axis=0)
    plain = rotate(ROUND_TRIPS["turbo4"](rotate(rows)).astype(np.float32))
    assert np.array_equal(round_trip(rows, "turbo4", classes=1), plain)
    for mask in range(8):
        twice = butterflies(butterflies(rows, mask), mask)
        assert np.allclose(twice, rows, atol=1e-5)
    power = {}
    for classes in (1, 2, 4, 8):
        err = round_trip(rows, "turbo4", classes=classes) - rows
        power[classes] = float((err.mean(axis=0) ** 2).mean())
        assert float((err**2).mean()) < 1.25 * power[1]
    assert power[2] < 0.7 * power[1] and power[4] < 0.45 * power[1]
    assert power[8] < 0.3 * power[1]


@pytest.fixture(scope="module")
def smollm2() -> tuple[LlamaGguf, list[int]]:
    model = LlamaGguf(assets.resolve_model(None))
    return model, tokenize(model, assets.fetch_text(), N_TOKENS)


@pytest.mark.slow
def test_first_key_and_quantizer_order(smollm2) -> None:
    model, tokens = smollm2
    t4, q8, sink = Treatment("turbo4"), Treatment("q8_0"), Treatment("turbo4", sink=1)
    kld = chunk_klds(model, tokens, [t4, q8, sink])
    assert 0 < kld[q8] < 0.05 * kld[t4]
    # the exact first key takes about half of the turbo4 keys' loss (docs/BENCHMARKS.md)
    assert kld[sink] < 0.75 * kld[t4]


@pytest.mark.slow
def test_key_scales_are_pair_tied_with_unit_geometric_mean(smollm2) -> None:
    model, tokens = smollm2
    _, qs, ks = model.queries_and_keys(tokens, 128)
    s = key_scales(model, qs[3], ks[3], alpha=1.0)
    assert s.shape == (model.n_head_kv, model.head_dim)
    pairs = model.pairs(s)
    np.testing.assert_allclose(pairs.real, pairs.imag)
    np.testing.assert_allclose(np.log(pairs.real).mean(axis=-1), 0, atol=1e-5)


@pytest.mark.slow
def test_qwen2_forward_is_sane() -> None:
    model = LlamaGguf(assets.fetch_model("qwen2.5-coder-0.5b"))
    assert model.neox
    nll = model.run(tokenize(model, assets.fetch_text(), N_TOKENS)).nll
    assert np.exp(nll.mean()) < 40  # llama-perplexity's first 512 tokens: about 29


@pytest.mark.slow
def test_passkey_margins_of_the_exact_cache(smollm2) -> None:
    """The sweep's passkey prompt at 512 tokens, teacher-forced: the exact cache is sure of
    every digit (positive margins), and q8_0 values keep that certainty to a few hundredths
    (the key's log-probability, summed over its tokens)."""
    model, _ = smollm2
    tok = BpeTokenizer.from_gguf(model.reader)
    prompt, _ = prompt_tokens(tok.encode(FILLER) * 40, Trial(512, 0.5, "65125", 512),
                              tok.encode(NEEDLE.format(key="65125")), tok.encode(QUESTION))
    answer = tok.encode(" 65125")
    (_, exact, margin), (_, q8, _) = answer_log_probs(model, prompt, answer,
                                                      [Treatment(), Treatment(v="q8_0")])
    assert (margin[1:] > 0).all()  # the digits; the first token is the space before them
    assert abs(q8.sum() - exact.sum()) < 0.05
