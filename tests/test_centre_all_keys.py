"""TQLLAMA_CENTER_ALL_KEYS=1 (patch 0038): upstream's quantized K caches centred too.

Key centring was for turbo K caches and the q8_0 layers a turbo cache protects. Upstream's
q8_0 K cache stores Qwen2.5's biased keys uncentred, and that is most of its loss: c=512,
8 chunks, KLD against the f16 cache 0.0146 uncentred, 0.0018 centred (docs/BENCHMARKS.md,
"What q8_0's loss is made of"). Opt-in: without the variable -ctk q8_0 stays upstream's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tqlab.server import PROMPT, complete, post, server
from tqlab.tools import perplexity
from tqllama import assets

pytestmark = pytest.mark.slow

ALL_LINE = "every quantized K layer is centred, turbo or not (24 layers)"
CENTRE_LINE = "turbo key centring on in 24 layers"


def test_centring_qwens_q8_0_keys_takes_most_of_its_loss(built_tools, text: Path,
                                                          tmp_path: Path) -> None:
    qwen = assets.fetch_model("qwen2.5-coder-0.5b")
    common = [built_tools.binaries["llama-perplexity"], "-m", str(qwen), "-f", str(text),
              "-c", "512", "--chunks", "1"]
    base = tmp_path / "qwen-f16.kld"
    perplexity(*common, "--kl-divergence-base", str(base))
    q8_0 = [*common, "-ctk", "q8_0", "-ctv", "q8_0", "--kl-divergence-base", str(base),
            "--kl-divergence"]
    env = {k: v for k, v in os.environ.items() if k != "TQLLAMA_CENTER_ALL_KEYS"}

    plain, log = perplexity(*q8_0, env=env)
    assert "centring on" not in log and ALL_LINE not in log
    centred, log = perplexity(*q8_0, env={**env, "TQLLAMA_CENTER_ALL_KEYS": "1"})
    assert ALL_LINE in log and CENTRE_LINE in log
    assert plain.kld is not None and centred.kld is not None
    assert centred.kld.kld_mean.value < 0.5 * plain.kld.kld_mean.value, (centred.kld, plain.kld)


def test_a_slot_keeps_to_the_centring_it_was_saved_with(built_tools, model: Path,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A q8_0 slot saved with uncentred keys is refused, in one line that names the setting,
    by a server that centres them, and a slot saved there restores there."""
    binary = built_tools.binaries["llama-server"]
    args = ("-c", "1024", "-np", "1", "--slot-save-path", str(tmp_path), "-ctk", "q8_0",
            "-ctv", "q8_0", "-fa", "on")
    monkeypatch.delenv("TQLLAMA_CENTER_ALL_KEYS", raising=False)
    with server(binary, model, tmp_path / "plain.log", *args) as url:
        complete(url, prompt=PROMPT, n_predict=8, temperature=0)
        status, out = post(f"{url}/slots/0?action=save", {"filename": "plain.bin"})
        assert status == 200, out
    monkeypatch.setenv("TQLLAMA_CENTER_ALL_KEYS", "1")
    log = tmp_path / "centred.log"
    with server(binary, model, log, *args) as url:
        refused, err = post(f"{url}/slots/0?action=restore", {"filename": "plain.bin"})
        complete(url, prompt=PROMPT, n_predict=8, temperature=0)
        status, out = post(f"{url}/slots/0?action=save", {"filename": "centred.bin"})
        assert status == 200, out
        status, out = post(f"{url}/slots/0?action=restore", {"filename": "centred.bin"})
        assert status == 200 and out["n_restored"] > 0, out
    assert refused == 400, err
    text = log.read_text()
    assert "every quantized K layer is centred, turbo or not (30 layers)" in text
    assert "TQLLAMA_CENTER_ALL_KEYS settings) than this context uses" in text
