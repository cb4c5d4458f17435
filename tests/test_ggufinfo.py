"""The header reader against the gguf package's own reader, and its refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter

from tqlab.synth import write_model
from tqllama.errors import TqError
from tqllama.ggufinfo import read_gguf


def test_matches_gguf_reader(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", arch="gemma3", sliding_window=128, swa_pattern=2)
    ours = read_gguf(path)
    ref = GGUFReader(path)
    assert ours.architecture == "gemma3"
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    assert [t.n_bytes for t in ours.tensors] == [int(t.n_bytes) for t in ref.tensors]
    assert [t.shape for t in ours.tensors] == [tuple(int(d) for d in t.shape) for t in ref.tensors]
    for key in ("gemma3.attention.sliding_window", "gemma3.block_count", "tokenizer.ggml.model"):
        assert ours.metadata[key] == ref.fields[key].contents()
    assert ours.metadata["tokenizer.ggml.tokens"] == ref.fields["tokenizer.ggml.tokens"].contents()


def test_weight_bytes_is_the_tensor_data(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", dtype="f32", n_embd=256, n_vocab=400)
    g = read_gguf(path)
    # file = header + aligned tensor data; the header of this model is well under 64 KiB
    assert 0 < path.stat().st_size - g.weight_bytes < 64 * 1024
    embd = next(t for t in g.tensors if t.name == "token_embd.weight")
    assert embd.shape == (256, 400) and embd.n_bytes == 256 * 400 * 4


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(TqError, match="not a GGUF file"):
        read_gguf(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TqError, match="does not exist"):
        read_gguf(tmp_path / "nope.gguf")


@pytest.mark.parametrize("keep", [4, 12, 200])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    whole = write_model(tmp_path / "m.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(whole[:keep])
    with pytest.raises(TqError, match="damaged or truncated"):
        read_gguf(path)


def write_split(tmp_path: Path) -> list[Path]:
    # three parts of two, two and one 4x8 f32 tensors, as llama-gguf-split names them
    w = GGUFWriter(tmp_path / "m.gguf", "llama", split_max_tensors=2)
    w.add_block_count(1)
    for i in range(5):
        w.add_tensor(f"t{i}", np.ones((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return [tmp_path / f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


def test_split_model_sums_all_parts(tmp_path: Path) -> None:
    first, _, last = write_split(tmp_path)
    g = read_gguf(first)
    assert [t.name for t in g.tensors] == [f"t{i}" for i in range(5)]
    assert g.weight_bytes == 5 * 4 * 8 * 4 and g.metadata["llama.block_count"] == 1
    with pytest.raises(TqError, match="pass the first part"):
        read_gguf(last)
    last.unlink()
    with pytest.raises(TqError, match=r"m-00003-of-00003\.gguf does not exist"):
        read_gguf(first)
