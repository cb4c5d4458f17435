"""Boundary layers (`--cache-boundary-layers N`) in the patched tools, on SmolLM2 (30 layers,
3 KV heads of 64): per-layer cache types, their sizes, the per-layer rotation (quality), K-shift,
llama-bench, and a sweep with a boundary pair.

The quality checks assert only what must hold: turbo2 everywhere is the worst of these
caches, so any boundary protection of turbo2 lowers its KLD. A layer rotated by the rule of
another type (H for turbo, D H D for q8_0, anything for f16) shows up as a KLD far above the
plain pair's.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tqlab.server import complete, server
from tqlab.tools import perplexity, run
from tqllama.bench.parse_bench import parse_bench
from tqllama.bench.parse_perplexity import PerplexityResult
from tqllama.bench.store import Store

pytestmark = pytest.mark.slow

CTX, CHUNKS = 512, 2  # 510 scored tokens: turbo2 0.85, @b2 0.63, turbo3 0.13 KLD
N_LAYER, KV_WIDTH = 30, 3 * 64  # SmolLM2: layers, K (and V) values per token and layer
BYTES_PER_64 = {"turbo2": 18, "q8_0": 68, "f16": 128}
TURBO2 = ("-ctk", "turbo2", "-ctv", "turbo2")


def kld_run(tools, model: Path, text: Path, base: Path, *cache: str) -> PerplexityResult:
    result, _ = perplexity(tools.binaries["llama-perplexity"], "-m", str(model), "-f", str(text),
                           "-c", str(CTX), "--chunks", str(CHUNKS), *cache,
                           "--kl-divergence-base", str(base), "--kl-divergence")
    assert result.kld is not None
    return result


@pytest.fixture(scope="module")
def plain_turbo2(built_tools, model: Path, text: Path, base_logits: Path) -> PerplexityResult:
    return kld_run(built_tools, model, text, base_logits, *TURBO2)


def nbytes(ctype: str, layers: int, cells: int) -> int:
    """Bytes of one side of the cache (K or V) for `layers` layers of `cells` cells."""
    return layers * cells * KV_WIDTH // 64 * BYTES_PER_64[ctype]


def mib(ctype: str, layers: int, cells: int) -> float:
    """As llama.cpp prints it: MiB to 2 decimals."""
    return round(nbytes(ctype, layers, cells) / 2**20, 2)


@pytest.mark.parametrize("edge", ["q8_0", "f16"])
def test_boundary_layers_keep_their_types_and_lower_the_kld(
        built_tools, model: Path, text: Path, base_logits: Path,
        plain_turbo2: PerplexityResult, edge: str) -> None:
    """N = 2 keeps layers 0, 1, 28, 29 in `edge`: q8_0 is rotated with H alone, f16 not at
    all, the turbo2 layers with D H D; each size share is exact to llama.cpp's rounding."""
    result = kld_run(built_tools, model, text, base_logits, *TURBO2,
                     "--cache-boundary-layers", "2", "-ctkb", edge, "-ctvb", edge)
    kv = result.kv_cache
    assert kv.layers == N_LAYER
    cells = kv.cells * kv.streams
    parts = (("turbo2", mib("turbo2", N_LAYER - 4, cells)), (edge, mib(edge, 4, cells)))
    assert kv.k_parts == kv.v_parts == parts
    total = 2 * (nbytes("turbo2", N_LAYER - 4, cells) + nbytes(edge, 4, cells))
    assert kv.total_mib == round(total / 2**20, 2)
    plain = plain_turbo2.kv_cache
    assert plain.k_parts == (("turbo2", mib("turbo2", N_LAYER, plain.cells * plain.streams)),)
    assert result.kld is not None and plain_turbo2.kld is not None
    assert result.kld.kld_mean.value < plain_turbo2.kld.kld_mean.value


def test_unknown_boundary_type_is_one_line(built_tools, model: Path) -> None:
    proc = run([built_tools.binaries["llama-perplexity"], "-m", str(model), "-ctkb", "turbo6"])
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "turbo6" in ln]
    assert len(lines) == 1 and "Unsupported cache type: turbo6 (valid: " in lines[0]
    assert "turbo4, turbo3, turbo2" in lines[0]
    proc = run([built_tools.binaries["llama-perplexity"], "-m", str(model),
                "--cache-boundary-layers", "-1"])
    assert proc.returncode != 0 and "must not be negative" in proc.stderr


def test_llama_bench_runs_and_reports_boundary_layers(built_tools, model: Path) -> None:
    cmd = [built_tools.binaries["llama-bench"], "-m", str(model), "-p", "16", "-n", "4",
           "-r", "1", "-t", "2", "-fa", "1", *TURBO2, "--cache-boundary-layers", "2",
           "-ctvb", "f16", "-o", "jsonl"]
    proc = run(cmd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = parse_bench(proc.stdout, "jsonl", 2)
    assert [(r.type_k, r.type_v) for r in rows] == [("turbo2", "turbo2")] * 2
    fields = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert {(f["cache_boundary_layers"], f["type_k_boundary"], f["type_v_boundary"])
            for f in fields} == {(2, "q8_0", "f16")}
    bad = run([*cmd[:-2], "-ctkb", "turbo6"])
    assert bad.returncode != 0


def test_context_shift_with_boundary_layers(built_tools, model: Path, tmp_path: Path) -> None:
    """K-shift un-rotates and re-rotates every layer by its own type's rule (q8_0: H, turbo3:
    D H D); a layer shifted with the other rule would leave keys the model cannot read."""
    log = tmp_path / "server.log"
    with server(built_tools.binaries["llama-server"], model, log, "-c", "256", "-np", "1",
                "--context-shift", "-ctk", "turbo3", "-ctv", "turbo3", "-fa", "on",
                "--cache-boundary-layers", "2") as url:
        out = complete(url, prompt="The history of the city begins with a small settlement "
                       "on the river. Over the centuries it grew into a market town, and later",
                       n_predict=360, temperature=0, n_probs=1, ignore_eos=True)
    text_log = log.read_text()
    assert "K (turbo3):" in text_log and "+ K (q8_0):" in text_log
    assert "slot context shift" in text_log, "the run never shifted its context"
    after = [math.exp(t["logprob"]) for t in out["completion_probabilities"]][256:]
    assert len(after) > 80 and sum(after) / len(after) > 0.2


def test_sweep_with_a_boundary_pair(built_tools, model: Path, text: Path,
                                    tmp_path: Path) -> None:
    """The label reaches llama-perplexity's command line, the store and the table with its
    gap section; a pair whose type the build lacks is skipped with a note, not a failure.
    (llama-bench's command line: tests/test_bench_boundary.py; its option: above.)"""
    bin_dir = Path(built_tools.binaries["llama-perplexity"]).parent
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from tqllama.cli import main; main()", "bench", "sweep",
           "--bin-dir", str(bin_dir), "--model", str(model), "--text", str(text),
           "--cache", "turbo2/turbo2", "--cache", "turbo2/turbo2@b1",
           "--cache", "turbo3/turbo3", "--cache", "turbo4_qjl/q8_0",
           "--ctx", "128", "--chunks", "2", "--depths", "", "--threads", "2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TQLLAMA_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    helptext = run([built_tools.binaries["llama-perplexity"], "--help"]).stdout
    if "turbo4_qjl" not in helptext:
        assert "skipped turbo4_qjl/q8_0: the build has no turbo4_qjl" in proc.stderr
    (kld,) = [r for r in Store(out).load().values() if r.pair.label == "turbo2/turbo2@b1"]
    assert kld.kind == "kld" and kld.boundary == 1 and "--cache-boundary-layers" in kld.command
    assert kld.perplexity is not None and len(kld.perplexity.kv_cache.k_parts) == 2
    lines = proc.stdout.splitlines()
    row = next(ln for ln in lines if ln.startswith("| turbo2/turbo2@b1 |"))
    assert "| 2.67/2.67 |" in row  # (2 x 8.5 + 28 x 2.25) / 30 bits
    assert any(ln.startswith("| turbo2/turbo2@b1 | 1 |") and ln.endswith("% |") for ln in lines)
