"""Passkey retrieval at depth: can the model still find one fact in a long cached context?

KL divergence averages over every token; a long-context user asks whether one fact written
thousands of tokens back can still be read. A trial hides "The pass key is NNNNN." in
filler text (the classic passkey test's "The grass is green. The sky is blue. ..."
repeated, so that finding the key is a matter of attention, not of reading comprehension),
asks for it at the end and scores greedy decoding by exact match; it fills a context of
its length in tokens (prompt and answer). Prompts are token ids, so their lengths are exact.

One key is asked at every length: it sits at its depth (a fraction) of the shortest
context's prompt, so every longer prompt is the same text going on further and the key is
further back (at depth 0.5 of 2048 it is 1K, 3K and 7K tokens back at 2048, 4096 and 8192).
llama-server's prompt cache then reads the longest prompt once and each shorter one costs
its question only: one prefill per key, which is what makes the check cheap enough to run
at 8K on a CPU. One key per prompt: a small model asked about one of several keys answers
with the last one it read.

Near the edge of what a model can retrieve, whether one key is found is one draw: a cache
that loses one key may keep the next. Many keys (`keys` per depth, other draws with `seed`)
say how often; each costs a prefill at the longest length, minutes at 8K on two cores, so
the caller gets every outcome as it comes (`on_outcome`) and can hand the finished ones
back (`done`) to go on where a stopped run ended.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqllama.errors import TqError
from tqllama.serve import post, server

FILLER = (" The grass is green. The sky is blue. The sun is yellow. Here we go."
          " There and back again.")
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"
ANSWER = 8  # tokens generated: a five-digit key and what follows it
TOP = 10  # candidates llama-server reports for the answer's first token (the margin)


@dataclass(frozen=True)
class Trial:
    length: int  # the context it fills: prompt and answer, in tokens
    depth: float  # where the key sits, as a fraction of the shortest context's prompt
    key: str
    shortest: int  # that shortest context, in tokens

    @property
    def prompt(self) -> int:
        """The prompt's tokens."""
        return self.length - ANSWER

    @property
    def label(self) -> str:
        return f"{self.length}@{self.depth:g}"


@dataclass(frozen=True)
class Outcome:
    trial: Trial
    answer: str
    position: int  # the token where the key's sentence starts
    read: int  # prompt tokens llama-server computed (the rest came from its prompt cache)
    # how sure the model was of the key's first token: its log-probability less that of the
    # likeliest other token (< 0: greedy decoding took the other); None when it was not
    # among the TOP likeliest. Exact match says found or not; the margin says by how much.
    margin: float | None = None

    @property
    def found(self) -> bool:
        """Exact match: the first number in the answer is the key."""
        m = re.search(r"\d+", self.answer)
        return m is not None and m.group() == self.trial.key


def trials(lengths: Sequence[int], depths: Sequence[float], keys: int = 1,
           seed: int = 0) -> list[Trial]:
    """`keys` keys per depth, each with its own 5-digit number and asked at every length.
    Deepest key first, and each key's longest context first: each prompt then shares the
    longest possible prefix with the one before it."""
    rng = random.Random(seed)
    shortest = min(lengths)
    out = []
    for depth in sorted(depths, reverse=True):
        for _ in range(keys):
            key = str(rng.randrange(10_000, 100_000))
            out += [Trial(n, depth, key, shortest) for n in sorted(lengths, reverse=True)]
    return out


def _tokens(url: str, text: str) -> list[int]:
    status, out = post(f"{url}/tokenize", {"content": text, "add_special": False})
    if status != 200:
        raise TqError(f"llama-server could not tokenize the text: {out}")
    return out["tokens"]


def prompt_tokens(hay: Sequence[int], trial: Trial, needle: Sequence[int],
                  question: Sequence[int]) -> tuple[list[int], int]:
    """The trial's prompt (the filler with the key's sentence at its place, then the
    question) and where that sentence starts."""
    room = trial.shortest - ANSWER - len(question) - len(needle)
    if room < 0:
        raise TqError(f"a passkey context of {trial.shortest} tokens has no room for the key: "
                      "ask for longer contexts")
    at = int(trial.depth * room)
    body = trial.prompt - len(question) - len(needle)
    return [*hay[:at], *needle, *hay[at:body], *question], at


def first_token_margin(out: dict[str, Any], token: int) -> float | None:
    """The margin of `token` at the answer's first position, from llama-server's
    `completion_probabilities` (log-probabilities of the TOP likeliest tokens)."""
    top = {p["id"]: p["logprob"] for p in out["completion_probabilities"][0]["top_logprobs"]}
    if token not in top:
        return None
    others = [lp for t, lp in top.items() if t != token]
    return top[token] - max(others) if others else None


def run_trials(url: str, planned: Sequence[Trial],
               on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """The trials against one llama-server (one slot): prompts as token ids, greedy answers;
    `on_outcome` gets each outcome as it comes."""
    filler = _tokens(url, FILLER)
    hay = filler * (max(t.prompt for t in planned) // len(filler) + 1)
    question = _tokens(url, QUESTION)
    # a key is asked at every length: its sentence is tokenized once
    keys = dict.fromkeys(t.key for t in planned)
    needles = {key: _tokens(url, NEEDLE.format(key=key)) for key in keys}
    firsts = {key: _tokens(url, f" {key}")[0] for key in keys}  # the answer's first token
    outcomes = []
    for t in planned:
        prompt, at = prompt_tokens(hay, t, needles[t.key], question)
        status, out = post(f"{url}/completion", {
            "prompt": prompt, "n_predict": ANSWER, "temperature": 0, "cache_prompt": True,
            "n_probs": TOP,
        })
        if status != 200:
            raise TqError(f"llama-server failed a {t.prompt}-token passkey prompt: "
                          f"{out.get('error', out)}")
        if out.get("tokens_evaluated") != t.prompt:
            raise TqError(f"llama-server read {out.get('tokens_evaluated')} tokens of a "
                          f"{t.prompt}-token passkey prompt: its tokenizer and this prompt differ")
        outcomes.append(Outcome(t, out["content"], at, out["timings"]["prompt_n"],
                                first_token_margin(out, firsts[t.key])))
        if on_outcome is not None:
            on_outcome(outcomes[-1])
    return outcomes


def passkey(binary: Path, model: Path, cache_args: Sequence[str], log: Path,
            lengths: Sequence[int], depths: Sequence[float], keys: int = 1,
            threads: int | None = None, extra_args: Sequence[str] = (),
            env: dict[str, str] | None = None, seed: int = 0,
            done: Sequence[dict[str, Any]] = (),
            on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """All trials for one cache configuration (`-ctk ... -ctv ...` in `cache_args`; the
    server's whole environment in `env`, this process's when None), in the plan's order.
    `done` holds the `fields` of outcomes already in hand: those trials are not asked again
    (and the server's log goes on after the earlier one's); `on_outcome` gets each new one."""
    planned = trials(lengths, depths, keys, seed)
    finished = {o.trial: o for o in from_fields(planned, done)}
    todo = [t for t in planned if t not in finished]
    if todo:
        # -lv 4: the log shows libllama's info lines (the KV cache's size and settings)
        args = ["-c", str(max(lengths)), "-np", "1", "-fa", "on", "--no-warmup", "-lv", "4",
                *cache_args, *extra_args]
        if threads:
            args += ["-t", str(threads)]
        with server(binary, model, log, *args, env=env, append=bool(finished)) as url:
            for outcome in run_trials(url, todo, on_outcome):
                finished[outcome.trial] = outcome
    return [finished[t] for t in planned]


def summary(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Found / tried per context length, and every trial's answer, for the results store."""
    by_length: dict[str, list[int]] = {}
    for o in outcomes:
        found_tried = by_length.setdefault(str(o.trial.length), [0, 0])
        found_tried[0] += o.found
        found_tried[1] += 1
    # the smallest margin per length (None where no trial has one): how near a loss it came
    margins: dict[str, float | None] = {}
    for length in by_length:
        known = [o.margin for o in outcomes
                 if str(o.trial.length) == length and o.margin is not None]
        margins[length] = min(known) if known else None
    return {
        "found": sum(o.found for o in outcomes),
        "tried": len(outcomes),
        "read": sum(o.read for o in outcomes),
        "by_length": by_length,
        "min_margin": margins,
        "trials": [fields(o) for o in outcomes],
    }


def fields(outcome: Outcome) -> dict[str, Any]:
    """One trial's outcome as JSON fields (the store's `trials`, a stopped run's partial file)."""
    o = outcome
    return {"length": o.trial.length, "depth": o.trial.depth, "key": o.trial.key,
            "position": o.position, "answer": o.answer, "found": o.found, "read": o.read,
            "margin": o.margin}


def from_fields(planned: Sequence[Trial], rows: Sequence[dict[str, Any]]) -> list[Outcome]:
    """The outcomes `fields` wrote, for the trials of `planned` they belong to (rows of other
    trials are left out: a plan asked differently does not take them)."""
    by_trial = {(t.length, t.depth, t.key): t for t in planned}
    out = []
    for row in rows:
        trial = by_trial.get((row["length"], row["depth"], row["key"]))
        if trial is not None:
            out.append(Outcome(trial, row["answer"], row["position"], row["read"],
                               row.get("margin")))
    return out
