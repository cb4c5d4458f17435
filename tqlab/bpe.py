"""A minimal byte-level BPE tokenizer for GGUF vocabularies of type "gpt2".

Enough to turn WikiText into the token ids SmolLM2 was trained on: GPT-2's byte-to-
unicode mapping, the merge ranks from `tokenizer.ggml.merges`, and llama.cpp's "smollm"
pre-tokenizer (every digit alone, then the GPT-2 split). Python's `re` has no \\p{L}, so
letters are [^\\W\\d_] and numbers \\d: exact for ASCII text, close elsewhere. Special
tokens are not parsed (plain text has none).
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import pairwise

from tqllama.errors import TqError

_DIGIT = re.compile(r"(\d)")
_SPLIT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


class BpeTokenizer:
    def __init__(self, tokens: list[str], merges: list[str]) -> None:
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ", 1)): i for i, m in enumerate(merges)}
        self.byte_map = _bytes_to_unicode()
        self._bpe = lru_cache(maxsize=65536)(self._bpe_uncached)

    @classmethod
    def from_gguf(cls, reader: object) -> BpeTokenizer:
        fields = reader.fields  # type: ignore[attr-defined]
        if fields["tokenizer.ggml.model"].contents() != "gpt2":
            raise TqError("the GGUF tokenizer is not a byte-level BPE (tokenizer.ggml.model)")
        return cls(
            fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.merges"].contents()
        )

    def _bpe_uncached(self, word: str) -> tuple[int, ...]:
        parts = list(word)
        while len(parts) > 1:
            pairs = [
                (self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(pairwise(parts))
            ]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return tuple(self.ids[p] for p in parts)

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for chunk in _DIGIT.split(text):
            for piece in _SPLIT.findall(chunk):
                mapped = "".join(self.byte_map[b] for b in piece.encode("utf-8"))
                out.extend(self._bpe(mapped))
        return out
