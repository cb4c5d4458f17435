"""Cache policy files: the K and V cache type of every layer of one model.

`tqllama tune` writes them; `--cache-policy FILE` in llama-server, llama-cli,
llama-perplexity and llama-bench reads them (common_cache_policy_load in
patches/0019-tools-cache-policy.patch), and so do `tqllama plan` and the sweep. The format,
line by line, '#' starting a comment:

    tqllama-cache-policy 1
    model <the model's id, see model_id>
    layer 0 q8_0 turbo4
    layer 1 turbo4 turbo4
    ...
    end

A policy names the model it was made for: llama.cpp refuses it for any other model (its
sensitivities are that model's), and so does this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tqllama.errors import TqError
from tqllama.ggufinfo import GgufFile
from tqllama.kvshape import ModelShape, model_shape
from tqllama.types import CACHE_TYPES

HEADER = "tqllama-cache-policy 1"


def model_id(gguf: GgufFile) -> str:
    """What llama_model_cache_policy_id() says of this model (patches/0018-kv-cache-policy):
    architecture, layers, embedding width, KV heads, key head size, vocabulary size, name."""
    shape = model_shape(gguf)
    first = shape.layers[0]
    n_embd = gguf.metadata[f"{shape.arch}.embedding_length"]
    n_vocab = len(gguf.metadata.get("tokenizer.ggml.tokens", []))
    name = gguf.metadata.get("general.name", "n/a")
    return (f"{shape.arch}:{shape.n_trunk}:{n_embd}:{first.n_head_kv}:{first.head_k}:{n_vocab}:"
            f"{name}")


@dataclass(frozen=True)
class Policy:
    model: str
    k: tuple[str, ...]  # per layer
    v: tuple[str, ...]

    def bits_per_value(self, shape: ModelShape) -> float:
        """Mean bits per cached value over all layers, K and V weighted by their widths."""
        total = values = 0.0
        for layer, k, v in zip(shape.layers, self.k, self.v, strict=False):
            total += layer.k_width * CACHE_TYPES[k].bits_per_value
            total += layer.v_width * CACHE_TYPES[v].bits_per_value
            values += layer.k_width + layer.v_width
        return total / values

    def text(self, comments: Sequence[str] = ()) -> str:
        lines = [*(f"# {c}" for c in comments), HEADER, f"model {self.model}"]
        lines += [f"layer {il} {k} {v}" for il, (k, v) in enumerate(zip(self.k, self.v,
                                                                        strict=True))]
        return "\n".join([*lines, "end"]) + "\n"

    def write(self, path: Path, comments: Sequence[str] = ()) -> None:
        path.write_text(self.text(comments), encoding="utf-8")

    def check_model(self, gguf: GgufFile, path: Path) -> None:
        """TqError unless this policy was made for `gguf`'s model, as llama.cpp checks."""
        mine = model_id(gguf)
        if self.model != mine:
            raise TqError(f"cache policy {path} was made for the model '{self.model}', "
                          f"{gguf.path.name} is '{mine}': make one for it with tqllama tune")


def read(path: Path) -> Policy:
    """A policy file; any flaw is one TqError line naming the file and the line."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TqError(f"cannot read the cache policy {path} ({exc}): pass a file made by "
                      "tqllama tune") from None

    def fail(number: int, what: str) -> TqError:
        return TqError(f"cache policy {path}, line {number}: {what} (make it again with "
                       "tqllama tune)")

    model, k, v = "", [], []
    header = end = False
    for number, line in enumerate(raw.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if end:
            raise fail(number, "text after 'end'")
        if not header:
            if words != HEADER.split():
                raise fail(number, "not a tqllama cache policy (version 1)")
            header = True
        elif words[0] == "model":
            model = line.split("#", 1)[0].strip()[len("model"):].strip()
        elif words[0] == "layer":
            if len(words) != 4 or not words[1].isdigit():
                raise fail(number, "a layer line is 'layer <i> <K type> <V type>'")
            if int(words[1]) != len(k):
                raise fail(number, f"layer {words[1]} where layer {len(k)} was due")
            for name in words[2:]:
                if name not in CACHE_TYPES:
                    raise fail(number, f"unknown cache type '{name}'")
            k.append(words[2])
            v.append(words[3])
        elif words[0] == "end":
            end = True
        else:
            raise fail(number, f"unknown line '{words[0]}'")
    if not end:
        raise TqError(f"cache policy {path} ends early (no 'end' line): the file is "
                      "truncated; make it again with tqllama tune")
    if not model or not k:
        raise TqError(f"cache policy {path} names no model or no layers: make it again with "
                      "tqllama tune")
    return Policy(model, tuple(k), tuple(v))


# The automatic protection of turbo keys (llama_model_cache_policy_auto in
# patches/0018-kv-cache-policy.patch): without a policy, a turbo K cache keeps the K of every
# layer whose key bias has more than this many times the energy that its K projection gives
# an input of unit variance per channel in q8_0.
AUTO_BIAS_RATIO = 1000.0


def k_bias_ratio(gguf: GgufFile) -> list[float]:
    """Per layer, the key bias's energy over the K projection's energy on a unit input (the
    sum of squares of W_k times the attention norm's weights), as libllama computes it at
    load; [] for a model without a K bias."""
    tensors = {t.name: t for t in gguf.tensors}
    if "blk.0.attn_k.bias" not in tensors:
        return []

    ratios = []
    for il in range(model_shape(gguf).n_trunk):
        names = (f"blk.{il}.attn_k.bias", f"blk.{il}.attn_k.weight", f"blk.{il}.attn_norm.weight")
        if not all(n in tensors for n in names):
            return []
        bias, wk, norm = (tensors[n].values() for n in names)
        if wk.size != bias.size * norm.size:
            return []
        e_proj = float(np.sum((wk.reshape(bias.size, norm.size) * norm) ** 2))
        ratios.append(float(np.sum(bias**2)) / e_proj if e_proj > 0 else float("inf"))
    return ratios


def auto_protected(gguf: GgufFile, type_k: str) -> tuple[int, ...]:
    """The layers whose K a `type_k` cache keeps in q8_0 without a policy."""
    if not CACHE_TYPES[type_k].turbo:
        return ()
    return tuple(il for il, r in enumerate(k_bias_ratio(gguf)) if r > AUTO_BIAS_RATIO)
