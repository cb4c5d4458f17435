"""Synthetic GGUF models: what they contain, and that llama.cpp loads and runs them."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import pytest

from tqlab.synth import write_model
from tqllama.build import Manifest
from tqllama.errors import TqError
from tqllama.ggufinfo import read_gguf
from tqllama.kvshape import model_shape

VARIANTS = {
    "llama-head64": dict(),
    "llama-gqa-head128-f32": dict(n_head=4, n_head_kv=2, head_dim=128, dtype="f32"),
    "llama-head256": dict(n_head=2, n_head_kv=1, head_dim=256, n_layer=3),
    "llama-head80": dict(n_embd=320, n_head=4, head_dim=80),
    "gemma3-swa": dict(arch="gemma3", n_layer=4, sliding_window=64, swa_pattern=2),
    "deepseek2-mla": dict(arch="deepseek2", head_dim=64, kv_lora_rank=128, rope_dim=64),
}


def test_same_arguments_same_bytes(tmp_path: Path) -> None:
    a = write_model(tmp_path / "a.gguf", head_dim=128, seed=7).read_bytes()
    b = write_model(tmp_path / "b.gguf", head_dim=128, seed=7).read_bytes()
    c = write_model(tmp_path / "c.gguf", head_dim=128, seed=8).read_bytes()
    assert a == b and a != c


@pytest.mark.parametrize("name", VARIANTS)
def test_shapes_the_planner_reads(tmp_path: Path, name: str) -> None:
    kw = VARIANTS[name]
    path = write_model(tmp_path / "m.gguf", **kw)
    assert path.stat().st_size < 20 * 1024 * 1024
    shape = model_shape(read_gguf(path))
    layer = shape.layers[0]
    if shape.mla:
        assert (layer.n_head_kv, layer.k_width) == (1, 128 + 64)
    else:
        n_head = kw.get("n_head", 4)
        assert layer.head_k == kw.get("head_dim", kw.get("n_embd", 256) // n_head)
        assert layer.n_head_kv == kw.get("n_head_kv", n_head)
    assert shape.n_swa == kw.get("sliding_window", 0)
    assert len(shape.layers) == kw.get("n_layer", 2)


def test_large_model_stays_small_enough(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", n_embd=512, n_layer=4, n_head=4, n_head_kv=2,
                       head_dim=128, n_vocab=1024)
    assert path.stat().st_size < 20 * 1024 * 1024


@pytest.mark.parametrize(("kw", "message"), [
    (dict(arch="mamba"), "synthetic arch 'mamba'"),
    (dict(dtype="q4_0"), "dtype 'q4_0'"),
    (dict(n_head=4, n_head_kv=3), "not a multiple of n_head_kv 3"),
    (dict(sliding_window=128), "sliding_window needs arch='gemma3'"),
    (dict(n_vocab=300), "n_vocab must be at least"),
])
def test_bad_arguments(tmp_path: Path, kw: dict[str, object], message: str) -> None:
    with pytest.raises(TqError, match=re.escape(message)):
        write_model(tmp_path / "m.gguf", **kw)


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_llama_perplexity_runs_them(built_tools: Manifest, tmp_path: Path, name: str) -> None:
    model = write_model(tmp_path / "m.gguf", **VARIANTS[name])
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 60)
    cmd = [built_tools.binaries["llama-perplexity"], "-m", str(model), "-f", str(text),
           "-c", "128", "-b", "128", "--chunks", "2", "-t", "2", "-fa", "on"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # per-chunk "[i]ppl," on stdout; a random model over a 512-token vocab scores near 512
    ppl = [float(x) for x in re.findall(r"\[\d+\]([\d.]+|nan|inf)", proc.stdout)]
    assert ppl and all(math.isfinite(p) and 50 < p < 5000 for p in ppl)
