"""Passkey retrieval at depth (tqllama.bench.retrieval): the trials, the scoring, and real
llama-server runs on SmolLM2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tqllama.bench import retrieval
from tqllama.errors import TqError


def test_trials_are_seeded_and_share_the_longest_prefixes() -> None:
    """One key per depth, asked at every length: deepest key first, longest context first."""
    a = retrieval.trials([1024, 4096], [0.1, 0.5, 0.9], seed=3)
    assert a == retrieval.trials([1024, 4096], [0.1, 0.5, 0.9], seed=3)
    assert [t.label for t in a] == ["4096@0.9", "1024@0.9", "4096@0.5", "1024@0.5",
                                    "4096@0.1", "1024@0.1"]
    assert len({t.key for t in a}) == 3 and all(len(t.key) == 5 and t.key.isdigit() for t in a)
    assert a[0].key == a[1].key and {t.shortest for t in a} == {1024}
    assert len(retrieval.trials([1024], [0.5], keys=4)) == 4


def test_another_seed_draws_other_keys_at_the_same_places() -> None:
    a, b = (retrieval.trials([1024, 4096], [0.1, 0.9], keys=2, seed=s) for s in (0, 1))
    assert [t.label for t in a] == [t.label for t in b]
    assert not {t.key for t in a} & {t.key for t in b}


def test_outcomes_come_back_from_their_fields_for_the_trials_they_belong_to() -> None:
    """A stopped run's kept outcomes are handed back as JSON fields: they revive as the
    same outcomes of the same trials; a row no planned trial asks for is left out."""
    planned = retrieval.trials([512, 1024], [0.1, 0.5])
    outcomes = [retrieval.Outcome(t, f" {t.key}." if i else " the", 40 + i, 1016 - i,
                                  None if i else -1.5) for i, t in enumerate(planned)]
    rows = [retrieval.fields(o) for o in outcomes]
    assert rows[0]["found"] is False and rows[1]["found"] is True
    assert retrieval.from_fields(planned, rows) == outcomes
    assert retrieval.from_fields(planned[:1], rows) == outcomes[:1]
    other = retrieval.trials([512, 1024], [0.1, 0.5], seed=1)
    assert retrieval.from_fields(other, rows) == []


@pytest.mark.parametrize(("answer", "found"), [
    (" 15306. Remember it.", True), ("15306", True), (" the pass key.", False),
    (" 153061", False), (" 1530", False), ("", False), (" key 99999, no: 15306", False),
])
def test_exact_match_is_the_first_number(answer: str, found: bool) -> None:
    trial = retrieval.Trial(1024, 0.5, "15306", 1024)
    assert retrieval.Outcome(trial, answer, 500, 1024).found is found


def test_a_key_sits_at_its_depth_of_the_shortest_prompt_in_every_prompt() -> None:
    hay, needle, question = list(range(10_000)), [-1, -2, -3], [-9] * 5
    planned = retrieval.trials([512, 2048], [0.5])
    prompts = [retrieval.prompt_tokens(hay, t, needle, question) for t in planned]
    (long, at_long), (short, at_short) = prompts
    assert len(long) == 2048 - retrieval.ANSWER and len(short) == 512 - retrieval.ANSWER
    room = 512 - retrieval.ANSWER - len(question) - len(needle)
    assert at_long == at_short == room // 2
    assert long[at_long:at_long + 3] == needle and long[-5:] == question
    # the short prompt is the long one's beginning: the prompt cache reads it for free
    assert short[:-5] == long[:len(short) - 5]


def test_a_tiny_context_is_one_line() -> None:
    (tiny,) = retrieval.trials([40], [0.5])
    with pytest.raises(TqError, match="no room for the key"):
        retrieval.prompt_tokens(list(range(1000)), tiny, [-1] * 20, [-9] * 15)


@pytest.mark.slow
def test_passkey_through_llama_server(built_tools, model: Path, tmp_path: Path) -> None:
    """Prompts of exactly the asked length (llama-server counts them), answered greedily;
    the shorter prompt comes from the prompt cache but its question. SmolLM2 finds a key
    in filler with an f16 cache."""
    out = retrieval.passkey(Path(built_tools.binaries["llama-server"]), model,
                            ["-ctk", "f16", "-ctv", "f16"], tmp_path / "server.log",
                            lengths=[512, 1024], depths=[0.1], threads=2)
    assert [o.trial.length for o in out] == [1024, 512]
    assert all(o.answer for o in out)
    assert any(o.found for o in out), [o.answer for o in out]
    assert out[0].read == 1024 - retrieval.ANSWER and out[1].read <= 16, [o.read for o in out]
    summary = retrieval.summary(out)
    assert summary["tried"] == 2 and set(summary["by_length"]) == {"1024", "512"}
    assert [(t["length"], t["depth"]) for t in summary["trials"]] == [(1024, 0.1), (512, 0.1)]
    assert summary["read"] == out[0].read + out[1].read
    assert summary["min_margin"] == {str(o.trial.length): o.margin for o in out}
    # a key found was greedy's first token: its margin over every other is positive
    for o in out:
        assert not o.found or (o.margin is not None and o.margin > 0), o


@pytest.mark.slow
def test_a_run_given_its_finished_trials_asks_only_the_others(built_tools, model: Path,
                                                              tmp_path: Path) -> None:
    """The outcomes of a stopped run, handed back, are kept as they were and not asked
    again; each new outcome reaches on_outcome as it comes, and the server's log goes on."""
    binary, log = Path(built_tools.binaries["llama-server"]), tmp_path / "server.log"
    args = (["-ctk", "q8_0", "-ctv", "q8_0"], log, [512, 1024], [0.1, 0.9])
    first: list[retrieval.Outcome] = []
    full = retrieval.passkey(binary, model, *args, threads=2, seed=2, on_outcome=first.append)
    assert first == full and len(full) == 4
    started = log.read_text().count("listening on http")
    kept = [retrieval.fields(o) for o in full[:2]]
    kept[0]["answer"] = " 12345 (kept, not asked again)"
    second: list[retrieval.Outcome] = []
    resumed = retrieval.passkey(binary, model, *args, threads=2, seed=2, done=kept,
                                on_outcome=second.append)
    assert [o.trial for o in resumed] == [o.trial for o in full]
    assert resumed[0].answer == kept[0]["answer"] and resumed[1] == full[1]
    assert [o.trial for o in second] == [o.trial for o in full[2:]]
    assert second == resumed[2:]
    assert all(o.answer for o in second)
    text = log.read_text()
    assert text.count("listening on http") == started + 1
    # everything in hand: no server at all
    assert retrieval.passkey(binary, model, *args, seed=2, done=[
        retrieval.fields(o) for o in resumed]) == resumed
    assert log.read_text() == text


def test_the_margin_is_the_answers_lead_over_the_likeliest_other_token() -> None:
    def response(*top: tuple[int, float]) -> dict:
        return {"completion_probabilities": [
            {"top_logprobs": [{"id": i, "logprob": lp} for i, lp in top]}]}

    assert retrieval.first_token_margin(response((7, -0.1), (3, -2.6)), 7) == pytest.approx(2.5)
    assert retrieval.first_token_margin(response((3, -0.2), (7, -1.7)), 7) == pytest.approx(-1.5)
    assert retrieval.first_token_margin(response((3, -0.2), (4, -1.7)), 7) is None
