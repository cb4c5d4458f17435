"""Passkey retrieval at depth: can the model still find one fact in a long cached context?

KL divergence averages over every token; a long-context user asks whether one fact written
thousands of tokens back can still be read. Each trial hides "The pass key is NNNNN." in the
evaluation text at a given fraction of a prompt of a given length (in tokens), asks for it at
the end, and scores greedy decoding by exact match. Prompts are built as token ids, so their
lengths are exact; they share the text's prefix, so llama-server's prompt cache reuses the
part before the key from one trial to the next (trials run longest prefix first).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqllama.errors import TqError
from tqllama.serve import post, server

NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = " What is the pass key? The pass key is"
MARGIN = 64  # cells beyond the longest prompt: the question's answer and rounding


@dataclass(frozen=True)
class Trial:
    length: int  # prompt tokens
    depth: float  # where the key sits, as a fraction of the prompt
    key: str

    @property
    def label(self) -> str:
        return f"{self.length}@{self.depth:g}"


@dataclass(frozen=True)
class Outcome:
    trial: Trial
    answer: str

    @property
    def found(self) -> bool:
        """Exact match: the first number in the answer is the key."""
        m = re.search(r"\d+", self.answer)
        return m is not None and m.group() == self.trial.key


def trials(lengths: Sequence[int], depths: Sequence[float], keys: int = 1,
           seed: int = 0) -> list[Trial]:
    """`keys` trials per length and depth, each with its own 5-digit key; longest prefix
    first (a stable sort: keys of one cell keep their order)."""
    rng = random.Random(seed)
    out = [Trial(n, d, str(rng.randrange(10_000, 100_000)))
           for n in lengths for d in depths for _ in range(keys)]
    return sorted(out, key=lambda t: -t.length * t.depth)


def _tokens(url: str, text: str) -> list[int]:
    status, out = post(f"{url}/tokenize", {"content": text, "add_special": False})
    if status != 200:
        raise TqError(f"llama-server could not tokenize the text: {out}")
    return out["tokens"]


def run_trials(url: str, haystack: str, planned: Sequence[Trial]) -> list[Outcome]:
    """Each trial against one llama-server (one slot): prompt as token ids, greedy answer."""
    hay = _tokens(url, haystack)
    question = _tokens(url, QUESTION)
    outcomes = []
    for t in planned:
        needle = _tokens(url, NEEDLE.format(key=t.key))
        n_hay = t.length - len(needle) - len(question)
        if n_hay > len(hay):
            raise TqError(f"the text has {len(hay)} tokens, a {t.length}-token passkey prompt "
                          "needs more: pass a longer --text")
        at = int(n_hay * t.depth)
        prompt = hay[:at] + needle + hay[at:n_hay] + question
        status, out = post(f"{url}/completion", {
            "prompt": prompt, "n_predict": 8, "temperature": 0, "cache_prompt": True,
        })
        if status != 200:
            raise TqError(f"llama-server failed a {t.length}-token passkey prompt: "
                          f"{out.get('error', out)}")
        if out.get("tokens_evaluated") != t.length:
            raise TqError(f"llama-server read {out.get('tokens_evaluated')} tokens of a "
                          f"{t.length}-token passkey prompt: its tokenizer and this prompt differ")
        outcomes.append(Outcome(t, out["content"]))
    return outcomes


def passkey(binary: Path, model: Path, text: Path, cache_args: Sequence[str], log: Path,
            lengths: Sequence[int], depths: Sequence[float], keys: int = 1,
            threads: int | None = None, extra_args: Sequence[str] = ()) -> list[Outcome]:
    """All trials for one cache configuration (`-ctk ... -ctv ...` in `cache_args`)."""
    planned = trials(lengths, depths, keys)
    ctx = max(lengths) + MARGIN
    # the prompt needs at most ~6 characters per token of text
    haystack = text.read_text(encoding="utf-8", errors="replace")[: 6 * ctx]
    args = ["-c", str(ctx), "-np", "1", "-fa", "on", "--no-warmup", *cache_args, *extra_args]
    if threads:
        args += ["-t", str(threads)]
    with server(binary, model, log, *args) as url:
        return run_trials(url, haystack, planned)


def summary(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Found / tried per prompt length, and every trial's answer, for the results store."""
    by_length: dict[str, list[int]] = {}
    for o in outcomes:
        found_tried = by_length.setdefault(str(o.trial.length), [0, 0])
        found_tried[0] += o.found
        found_tried[1] += 1
    return {
        "found": sum(o.found for o in outcomes),
        "tried": len(outcomes),
        "by_length": by_length,
        "trials": [{"length": o.trial.length, "depth": o.trial.depth, "key": o.trial.key,
                    "answer": o.answer, "found": o.found} for o in outcomes],
    }
