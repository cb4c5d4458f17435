"""The F32 copy `tqllama tune` measures on (tqllama.exactweights): the same model, every
tensor dequantized, and on it a cache's KLD is its own (the quantized model's matmuls round
their activations, which makes any change to the cache cost a floor)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from tqlab.policies import N_LAYER, SMOLLM2_ID
from tqlab.tools import perplexity
from tqllama.errors import TqError
from tqllama.exactweights import exact_copy, write_f32_copy
from tqllama.ggufinfo import read_gguf
from tqllama.policy import Policy, model_id


def tiny_model(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A GGUF with a Q8_0 tensor, an F32 tensor and metadata of every kind."""
    rng = np.random.default_rng(1)
    weights, norm = rng.standard_normal((4, 64)).astype(np.float32), rng.random(64, np.float32)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny")
    writer.add_block_count(1)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_token_list(["<s>", "a", "b"])
    writer.add_token_scores([0.0, -1.5, -2.5])
    writer.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(weights,
                      gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("output_norm.weight", norm)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights, norm


def test_the_copy_holds_the_dequantized_tensors_and_the_same_metadata(tmp_path: Path) -> None:
    weights, norm = tiny_model(tmp_path / "m.gguf")
    write_f32_copy(tmp_path / "m.gguf", tmp_path / "f32.gguf")
    source, copy = gguf.GGUFReader(tmp_path / "m.gguf"), gguf.GGUFReader(tmp_path / "f32.gguf")
    fields = {n: f.contents() for n, f in copy.fields.items() if not n.startswith("GGUF.")}
    assert fields == {**{n: f.contents() for n, f in source.fields.items()
                         if not n.startswith("GGUF.")}, "general.file_type": 0}
    tensors = {t.name: t for t in copy.tensors}
    assert {t.tensor_type for t in tensors.values()} == {gguf.GGMLQuantizationType.F32}
    q = tensors["blk.0.attn_q.weight"]
    assert [int(n) for n in q.shape] == [64, 4]
    expected = gguf.quants.dequantize(source.tensors[0].data, gguf.GGMLQuantizationType.Q8_0)
    assert np.array_equal(np.asarray(q.data).reshape(4, 64), expected)
    assert 0 < np.abs(expected - weights).max() < 0.05  # Q8_0's rounding, kept exactly
    assert np.array_equal(np.asarray(tensors["output_norm.weight"].data), norm)


def test_the_copy_is_made_once_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TQLLAMA_CACHE", str(tmp_path / "cache"))
    tiny_model(tmp_path / "m.gguf")
    made: list[int] = []
    first = exact_copy(tmp_path / "m.gguf", on_start=lambda: made.append(1))
    assert exact_copy(tmp_path / "m.gguf", on_start=lambda: made.append(1)) == first
    assert made == [1] and first.parent == tmp_path / "cache" / "tune" / "models"
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no partial file left


def test_a_file_that_is_not_gguf_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"not a model")
    with pytest.raises(TqError) as err:
        write_f32_copy(tmp_path / "m.gguf", tmp_path / "f32.gguf")
    assert "\n" not in str(err.value) and "tqllama model fetch" in str(err.value)


def test_a_tensor_type_without_a_dequantizer_is_one_line(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(tmp_path / "m.gguf", "llama")
    writer.add_tensor("rope_freqs.weight", np.arange(8, dtype=np.int32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(TqError) as err:
        write_f32_copy(tmp_path / "m.gguf", tmp_path / "f32.gguf")
    assert "\n" not in str(err.value) and "I32 tensors" in str(err.value)
    assert not (tmp_path / "f32.gguf").exists()


@pytest.mark.slow
def test_on_the_copy_a_cache_costs_its_own_kld(built_tools, model: Path, text: Path,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """One layer's cache in bf16 moves SmolLM2 Q4_1's output by a floor (the matmuls re-round
    their activations downstream); on the copy it moves it by bf16's own error, and the copy
    is the same model to the policy files (the same id)."""
    monkeypatch.setenv("TQLLAMA_CACHE", str(tmp_path / "cache"))
    copy = exact_copy(model)
    assert model_id(read_gguf(copy)) == model_id(read_gguf(model)) == SMOLLM2_ID
    policy = tmp_path / "bf16.policy"
    Policy(SMOLLM2_ID, ("bf16",) + ("f16",) * (N_LAYER - 1),
           ("bf16",) + ("f16",) * (N_LAYER - 1)).write(policy)
    tool = built_tools.binaries["llama-perplexity"]
    kld = {}
    for name, weights in (("quantized", model), ("copy", copy)):
        common = ["-m", str(weights), "-f", str(text), "-c", "512", "--chunks", "1",
                  "-ctk", "f16", "-ctv", "f16"]
        base = tmp_path / f"{name}.kld"
        perplexity(tool, *common, "--kl-divergence-base", str(base))
        result, _ = perplexity(tool, *common, "--cache-policy", str(policy),
                               "--kl-divergence-base", str(base), "--kl-divergence")
        assert result.kld is not None
        kld[name] = result.kld.kld_mean.value
    assert kld["quantized"] > 1e-3
    assert kld["copy"] < 1e-4
