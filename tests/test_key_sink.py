"""The first key (and value) of each sequence kept in F32 beside a turbo cache (patches
0024, 0025, 0028, 0029).

The first token of a sequence is an attention sink: most heads give it much of their weight,
so its logit decides how much the other keys share, and its quantization error moves every
output alike instead of averaging out over the keys. The NumPy simulation (scripts/
cache_sim.py) put half of SmolLM2's turbo4-K loss there; the CPU cache keeps those keys in
F32 rows (one per sequence) and flash attention takes their K . Q from the rows. The weight
the sink takes carries its value too: a turbo V layer keeps the first value after the keys
in the same rows, and flash attention adds it in place of the quantized one.

llama-perplexity with -c 512 and its default batch of 2048 holds four chunks as four
sequences in one cache: each has its own first key, so a row read for the wrong cell would
show up as a KLD far above the quantized key's, not below it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tqlab.tools import perplexity

pytestmark = pytest.mark.slow

CTX, CHUNKS = 512, 4
TURBO4 = ("-ctk", "turbo4", "-ctv", "turbo4")
SINK_LINE = "turbo key sink on"


def kld_run(tools, model: Path, text: Path, base: Path, *cache: str,
            env: dict[str, str] | None = None) -> tuple[float, str]:
    result, log = perplexity(tools.binaries["llama-perplexity"], "-m", str(model), "-f",
                             str(text), "-c", str(CTX), "--chunks", str(CHUNKS), *cache,
                             "--kl-divergence-base", str(base), "--kl-divergence", env=env)
    assert result.kld is not None
    return result.kld.kld_mean.value, log


def with_env(**values: str) -> dict[str, str]:
    return {**os.environ, **values}


def test_the_first_keys_in_f32_lower_turbo4s_kld(built_tools, model: Path, text: Path,
                                                 base_logits: Path) -> None:
    # 16 chunks: 0.0247 -> 0.0164 (docs/BENCHMARKS.md)
    sink, log = kld_run(built_tools, model, text, base_logits, *TURBO4)
    assert SINK_LINE in log
    off, log = kld_run(built_tools, model, text, base_logits, *TURBO4,
                       env=with_env(TQLLAMA_TURBO_SINK="0"))
    assert SINK_LINE not in log
    assert sink < 0.8 * off, (sink, off)


@pytest.mark.parametrize(("cache", "env"), [
    (("-ctk", "q8_0", "-ctv", "turbo4"), {}),  # K not turbo: no centre, no sink
    (TURBO4, {"TQLLAMA_TURBO_CENTER": "span"}),  # the constant centre (what a GPU runs)
])
def test_only_the_position_aware_centre_keeps_first_keys(built_tools, model: Path, text: Path,
                                                         cache: tuple[str, ...],
                                                         env: dict[str, str]) -> None:
    _, log = perplexity(built_tools.binaries["llama-perplexity"], "-m", str(model), "-f",
                        str(text), "-c", "128", "--chunks", "1", *cache, env=with_env(**env))
    assert SINK_LINE not in log


@pytest.mark.parametrize("n_kv", [1, 200, 700])
def test_flash_attention_takes_the_rows_keys_and_values(llama_program, n_kv: int) -> None:
    """tests/c/fa_sink.c: garbage in the cells with a slot, the exact key and value in their
    rows: attention equals attention over the exact cache."""
    run = subprocess.run([str(llama_program("fa_sink")), str(n_kv), "kv"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    assert float(run.stdout.split("=")[1].split()[0]) <= 1e-4, run.stdout


def test_rows_with_keys_only_leave_the_quantized_values(llama_program) -> None:
    """The check can fail: rows without the values leave the garbage values in."""
    run = subprocess.run([str(llama_program("fa_sink")), "200", "k"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr[-2000:]
    assert float(run.stdout.split("=")[1].split()[0]) > 1e-2, run.stdout
