"""Passkey retrieval at depth (tqllama.bench.retrieval): the trials, the scoring, and real
llama-server runs on SmolLM2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tqllama.bench import retrieval
from tqllama.errors import TqError


def test_trials_are_seeded_and_longest_prefix_first() -> None:
    a = retrieval.trials([1024, 4096], [0.1, 0.5, 0.9], seed=3)
    assert a == retrieval.trials([1024, 4096], [0.1, 0.5, 0.9], seed=3)
    assert len(a) == 6 and len({t.key for t in a}) == 6
    assert all(len(t.key) == 5 and t.key.isdigit() for t in a)
    prefixes = [t.length * t.depth for t in a]
    assert prefixes == sorted(prefixes, reverse=True)
    assert a[0].label == "4096@0.9"


@pytest.mark.parametrize(("answer", "found"), [
    (" 15306. Remember it.", True), ("15306", True), (" the pass key.", False),
    (" 153061", False), (" 1530", False), ("", False), (" key 99999, no: 15306", False),
])
def test_exact_match_is_the_first_number(answer: str, found: bool) -> None:
    trial = retrieval.Trial(1024, 0.5, "15306")
    assert retrieval.Outcome(trial, answer).found is found


@pytest.mark.slow
def test_passkey_through_llama_server(built_tools, model: Path, text: Path,
                                      tmp_path: Path) -> None:
    """Prompts of exactly the asked length (llama-server counts them), answered greedily;
    SmolLM2 finds a key placed early in a short prompt with an f16 cache."""
    out = retrieval.passkey(Path(built_tools.binaries["llama-server"]), model, text,
                            ["-ctk", "f16", "-ctv", "f16"], tmp_path / "server.log",
                            lengths=[512, 1024], depths=[0.1], threads=2)
    assert [o.trial.length for o in out] == [1024, 512]
    assert all(o.answer for o in out)
    assert any(o.found for o in out), [o.answer for o in out]
    summary = retrieval.summary(out)
    assert summary["tried"] == 2 and set(summary["by_length"]) == {"1024", "512"}
    assert [(t["length"], t["depth"]) for t in summary["trials"]] == [(1024, 0.1), (512, 0.1)]


@pytest.mark.slow
def test_a_text_too_short_is_one_line(built_tools, model: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here. " * 20)
    with pytest.raises(TqError, match="pass a longer --text"):
        retrieval.passkey(Path(built_tools.binaries["llama-server"]), model, short,
                          ["-ctk", "q8_0", "-ctv", "q8_0"], tmp_path / "server.log",
                          lengths=[1024], depths=[0.5], threads=2)
