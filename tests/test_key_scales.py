"""Per-channel key scales with the position-aware centre (patch 0026), on Qwen2.5-Coder-0.5B.

The centred keys are multiplied per channel by s = (E|q|^2 / E|k|^2)^(1/4) (per RoPE pair
and KV head, from the ubatch that sets the centre) and the queries by 1/s, so q . k is
unchanged while the quantizer spends its precision where the queries look. Qwen2.5's keys
and queries are far from balanced across channels: turbo4/turbo4 (`--cache-policy none`)
at c=512, 8 chunks, 0.0171 -> 0.0104 (docs/BENCHMARKS.md). The NumPy mirror is
tqlab/cache_sim.py (key_scales).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tqlab.tools import perplexity
from tqllama import assets

pytestmark = pytest.mark.slow

SCALES_LINE = "turbo key scales on"


@pytest.fixture(scope="module")
def qwen_run(built_tools, text: Path, tmp_path_factory: pytest.TempPathFactory):
    qwen = assets.fetch_model("qwen2.5-coder-0.5b")
    common = [built_tools.binaries["llama-perplexity"], "-m", str(qwen), "-f", str(text),
              "-c", "512", "--chunks", "2"]
    base = tmp_path_factory.mktemp("kld") / "qwen-f16.kld"
    perplexity(*common, "--kl-divergence-base", str(base))

    def run(scale: str | None) -> tuple[float, str]:
        env = {k: v for k, v in os.environ.items() if k != "TQLLAMA_TURBO_SCALE"}
        if scale is not None:
            env["TQLLAMA_TURBO_SCALE"] = scale
        result, log = perplexity(*common, "-ctk", "turbo4", "-ctv", "turbo4", "--cache-policy",
                                 "none", "--kl-divergence-base", str(base), "--kl-divergence",
                                 env=env)
        assert result.kld is not None
        return result.kld.kld_mean.value, log

    return run


def test_key_scales_lower_qwens_turbo4_kld(qwen_run) -> None:
    scaled, log = qwen_run(None)
    assert SCALES_LINE in log
    off, log = qwen_run("0")
    assert SCALES_LINE not in log
    assert scaled < 0.8 * off, (scaled, off)


def test_half_the_exponent_is_between(qwen_run) -> None:
    """alpha (TQLLAMA_TURBO_SCALE) is read: 0.5 balances the channels half as far."""
    half, log = qwen_run("0.5")
    assert "(E|q|^2/E|k|^2)^(0.50/4)" in log
    off, _ = qwen_run("0")
    assert half < off
