"""How architectures map to cached layers: metadata-only GGUF files, one rule per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tqlab.synth import write_metadata
from tqllama.errors import TqError
from tqllama.ggufinfo import read_gguf
from tqllama.kvshape import ModelShape, model_shape


def meta_model(path: Path, arch: str, **keys: int | list[int] | list[bool]) -> Path:
    # attention__head_count -> attention.head_count
    return write_metadata(path, arch, {k.replace("__", "."): v for k, v in keys.items()})


BASE = dict(block_count=6, embedding_length=1024, attention__head_count=8,
            attention__head_count_kv=2, context_length=8192)


def shape_of(tmp_path: Path, arch: str, **keys: int | list[int] | list[bool]) -> ModelShape:
    return model_shape(read_gguf(meta_model(tmp_path / "m.gguf", arch, **{**BASE, **keys})))


def test_llama_defaults_head_size_from_embd_over_heads(tmp_path: Path) -> None:
    s = shape_of(tmp_path, "llama")
    assert [la.k_width for la in s.layers] == [128 * 2] * 6
    assert s.n_swa == 0 and not s.mla and all(la.cached for la in s.layers)


def test_key_and_value_length_override_head_size(tmp_path: Path) -> None:
    s = shape_of(tmp_path, "qwen3", attention__key_length=256, attention__value_length=64)
    assert (s.layers[0].k_width, s.layers[0].v_width) == (512, 128)


def test_per_layer_kv_heads(tmp_path: Path) -> None:
    s = shape_of(tmp_path, "llama", attention__head_count_kv=[2, 2, 0, 4, 4, 4])
    assert [la.n_head_kv for la in s.layers] == [2, 2, 0, 4, 4, 4]


def test_per_layer_array_of_wrong_length_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TqError, match="has 2 entries for 6 layers"):
        shape_of(tmp_path, "llama", attention__head_count_kv=[2, 2])


def test_gemma3_swa_only_with_a_window(tmp_path: Path) -> None:
    assert shape_of(tmp_path, "gemma3").n_swa == 0
    s = shape_of(tmp_path, "gemma3", attention__sliding_window=1024)
    # default period 6: five sliding layers, then a full one
    assert [la.swa for la in s.layers] == [True] * 5 + [False]
    assert s.n_swa == 1024


def test_swa_period_from_the_pattern_key(tmp_path: Path) -> None:
    s = shape_of(tmp_path, "gemma3", attention__sliding_window=512,
                 attention__sliding_window_pattern=2)
    assert [la.swa for la in s.layers] == [True, False] * 3


def test_swa_pattern_array(tmp_path: Path) -> None:
    flags = [True, False, False, True, True, False]
    s = shape_of(tmp_path, "gemma3", attention__sliding_window=512,
                 attention__sliding_window_pattern=flags)
    assert [la.swa for la in s.layers] == flags


def test_gemma2_window_defaults_to_4096(tmp_path: Path) -> None:
    s = shape_of(tmp_path, "gemma2")
    assert s.n_swa == 4096 and [la.swa for la in s.layers] == [True, False] * 3


def test_dense_first_pattern(tmp_path: Path) -> None:
    s = shape_of(tmp_path, "cohere2moe", attention__sliding_window=4096,
                 block_count=8, attention__head_count_kv=2)
    assert [la.swa for la in s.layers] == [False, True, True, True] * 2


def test_required_window_missing(tmp_path: Path) -> None:
    with pytest.raises(TqError, match=r"cohere2\.attention\.sliding_window"):
        shape_of(tmp_path, "cohere2")


def test_llama4_chunked_by_default_off_with_zero_window(tmp_path: Path) -> None:
    s = shape_of(tmp_path, "llama4", block_count=8)
    assert s.n_swa == 8192 and s.swa_kind == "chunked"
    assert [la.swa for la in s.layers] == [True, True, True, False] * 2
    assert shape_of(tmp_path, "llama4", attention__sliding_window=0).n_swa == 0


def test_smallthinker_forces_its_window(tmp_path: Path) -> None:
    s = shape_of(tmp_path, "smallthinker", attention__sliding_window=100, block_count=8,
                 attention__head_count_kv=2)
    assert s.n_swa == 4096


def test_gemma4_shared_kv_layers_and_swa_head_size(tmp_path: Path) -> None:
    flags = [True, True, False, True, True, False]
    s = shape_of(tmp_path, "gemma4", attention__sliding_window=512,
                 attention__sliding_window_pattern=flags, attention__shared_kv_layers=2,
                 attention__key_length=512, attention__value_length=512,
                 attention__key_length_swa=256, attention__value_length_swa=256)
    assert [la.cached for la in s.layers] == [True] * 4 + [False] * 2
    assert [la.head_k for la in s.layers] == [256, 256, 512, 256, 256, 512]


def test_mtp_layers_are_not_cached(tmp_path: Path) -> None:
    s = shape_of(tmp_path, "glm4moe", nextn_predict_layers=1)
    assert [la.cached for la in s.layers] == [True] * 5 + [False]
    assert s.n_trunk == 5


def test_mla_keys_make_a_k_only_cache(tmp_path: Path) -> None:
    s = shape_of(tmp_path, "deepseek2", attention__head_count_kv=1,
                 attention__key_length=576, attention__value_length=512,
                 attention__key_length_mla=192, attention__value_length_mla=128)
    assert s.mla and s.layers[0].k_width == 576


@pytest.mark.parametrize(("arch", "reason"), [
    ("mamba", "recurrent state"),
    ("jamba", "hybrid"),
    ("bert", "encoder"),
    ("deepseek32", "indexer"),
])
def test_refused_architectures_say_why(tmp_path: Path, arch: str, reason: str) -> None:
    with pytest.raises(TqError, match=reason):
        shape_of(tmp_path, arch)


def test_unknown_architecture_lists_missing_keys(tmp_path: Path) -> None:
    path = meta_model(tmp_path / "m.gguf", "mystery", block_count=4)
    with pytest.raises(TqError) as err:
        model_shape(read_gguf(path))
    msg = str(err.value)
    assert "'mystery'" in msg and "mystery.embedding_length" in msg
    assert "mystery.attention.head_count" in msg and "mystery.block_count" not in msg
