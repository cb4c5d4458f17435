"""A quantized KV cache simulated in the NumPy forward pass: what a cache treatment costs.

A treatment maps each layer's K and V rows to what attention reads back from a cache that
stores them: the position-aware key centre (patch 0021: the first ubatch's keys turned back
to position 0 and averaged, subtracted at each key's position; attention adds it back
exactly), the cache's rotation D H D, and the type's round trip through the reference
quantizers. Two treatments no cache has yet, to measure them before building them:

- sink=N: the keys and values at positions below N stay exact. The first token of a
  sequence is an attention sink in most heads: its logit decides how much of every query's
  weight the other keys share, so its quantization error moves every output alike instead
  of averaging out over the keys.
- alpha=A: per-channel key scaling (KIVI, KVQuant and SmoothQuant balance channels the
  same way). Each RoPE pair of the centred keys is multiplied by s before quantization and
  the queries by 1/s, which leaves q . k unchanged: s = (E[|q|^2] / E[|k|^2])^(A/4) per
  pair and KV head over the first ubatch (the query energy summed over the heads that share
  the KV head), scaled to a geometric mean of 1. A = 1 minimises E[(q . e)^2] for an error
  e that is isotropic after the rotation.

Measured and not built (docs/BENCHMARKS.md):

- vc=1: the values centred like the keys (the first ubatch's mean value per KV head
  subtracted before quantization; attention's weights sum to one, so adding it back to the
  output is exact).
- span=N: a position-aware key centre per span of N positions, each from the first ubatch
  of its own keys, instead of one from the cache's first ubatch.
- classes=C: rows alike make errors alike, which add up over the thousands of cells of a
  repeated text instead of averaging out. The row at position p is stored as T_c R x with
  c = p mod C and T_c an orthogonal involution cheap enough for a kernel (the FWHT's
  butterflies on the index bits that c names), so that C classes of cells make C unlike
  errors; attention would combine the classes' value sums. kclasses=C does the same to the
  keys (attention would turn the query per class). rowsigns=1 is the limit on both sides:
  random signs of its own for every row.

The KLD is llama-perplexity's: mean over the second half of each chunk of KL(exact || sim),
against the forward pass of the same tokens with an exact (float32) cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from tqlab.llama_forward import F32, LlamaGguf, RowMap
from tqllama.errors import TqError
from tqllama.quant import baselines, centring
from tqllama.quant.hadamard import rotate
from tqllama.quant.turbo import TurboQuantMSE

UBATCH = 512  # the keys the centre and the scales are measured on, as the cache does

ROUND_TRIPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "f32": lambda x: x,
    "q8_0": baselines.q8_0,
    "q5_1": baselines.q5_1,
    "q5_0": baselines.q5_0,
    "q4_0": baselines.q4_0,
    **{f"turbo{b}": TurboQuantMSE(b).roundtrip for b in (4, 3, 2)},
}


@dataclass(frozen=True)
class Treatment:
    k: str = "f32"
    v: str = "f32"
    sink: int = 0
    alpha: float | None = None
    vc: bool = False
    span: int = 0
    rowsigns: bool = False
    classes: int = 0
    kclasses: int = 0

    @classmethod
    def parse(cls, spec: str) -> Treatment:
        """`k=turbo4,v=turbo4,sink=1,alpha=1`: unnamed fields keep their defaults."""
        fields: dict[str, str] = {}
        for part in filter(None, spec.split(",")):
            key, _, value = part.partition("=")
            if key not in ("k", "v", "sink", "alpha", "vc", "span", "rowsigns", "classes",
                           "kclasses") \
                    or not value:
                raise TqError(f"bad treatment part {part!r} in {spec!r}: use k=TYPE,v=TYPE,"
                              "sink=N,alpha=A")
            fields[key] = value
        for side in ("k", "v"):
            if fields.get(side, "f32") not in ROUND_TRIPS:
                raise TqError(f"unknown type {fields[side]!r} in {spec!r}: one of "
                              f"{', '.join(ROUND_TRIPS)}")
        alpha = fields.get("alpha")
        return cls(fields.get("k", "f32"), fields.get("v", "f32"), int(fields.get("sink", 0)),
                   None if alpha is None else float(alpha), fields.get("vc", "0") == "1",
                   int(fields.get("span", 0)), fields.get("rowsigns", "0") == "1",
                   int(fields.get("classes", 0)), int(fields.get("kclasses", 0)))

    def spec(self) -> str:
        """The inverse of `parse`, with both types named."""
        parts = [f"k={self.k}", f"v={self.v}"]
        if self.sink:
            parts.append(f"sink={self.sink}")
        if self.alpha is not None:
            parts.append(f"alpha={self.alpha:g}")
        if self.vc:
            parts.append("vc=1")
        if self.span:
            parts.append(f"span={self.span}")
        if self.rowsigns:
            parts.append("rowsigns=1")
        if self.classes:
            parts.append(f"classes={self.classes}")
        if self.kclasses:
            parts.append(f"kclasses={self.kclasses}")
        return ",".join(parts)


def butterflies(rows: np.ndarray, mask: int) -> np.ndarray:
    """H_2 on the index bits of the last axis that mask names (bit 0: stride n/2, bit 1:
    n/4, ...): an orthogonal involution, a subset of the FWHT's stages."""
    n = rows.shape[-1]
    out = rows.astype(F32)
    for b in range(6):
        if mask >> b & 1:
            h = n >> (b + 1)
            v = out.reshape(*out.shape[:-1], -1, 2, h)
            a, c = v[..., 0, :], v[..., 1, :]
            out = np.stack(((a + c), (a - c)), axis=-2).reshape(out.shape) * F32(np.sqrt(0.5))
    return out


def round_trip(rows: np.ndarray, type_name: str, rowsigns: bool = False,
               classes: int = 1) -> np.ndarray:
    """Rows (T, ..., head_dim) through the cache's rotation and the type's quantizer and back.

    With classes, the row at position p is stored as T_c R x, c = p mod classes, T_c the
    butterflies of c's bits (T_0 = I): rows alike get errors unalike. With rowsigns, each row
    gets random signs of its own before the rotation."""
    if type_name == "f32":
        return rows
    if rowsigns:
        signs = np.random.default_rng(7).choice(np.array([-1, 1], F32), rows.shape)
        return round_trip(rows * signs, type_name, classes=classes) * signs
    rotated = rotate(rows.astype(F32)).astype(F32)
    out = np.empty_like(rotated)
    for c in range(classes):
        sel = butterflies(rotated[c::classes], c)
        out[c::classes] = butterflies(ROUND_TRIPS[type_name](sel).astype(F32), c)
    return rotate(out).astype(F32)


def key_centre(model: LlamaGguf, k: np.ndarray, span: int = 0) -> np.ndarray:
    """R(p) m for every key (T, kv_heads, head_dim): m the first ubatch's keys turned back to
    position 0, averaged (tqllama.quant.centring, what the CPU's cache subtracts).

    With span, each span of that many positions has its own m, from its own keys."""
    if not span:
        return k - centring.position_centre_keys(k[None], model.rope_base, UBATCH,
                                                 model.neox)[0]
    return np.concatenate([key_centre(model, k[lo : lo + span]) for lo in range(0, len(k), span)])


def key_scales(model: LlamaGguf, q: np.ndarray, k: np.ndarray, alpha: float) -> np.ndarray:
    """s per channel (kv_heads, head_dim), equal within each RoPE pair (see the module doc)."""
    group = model.n_head // model.n_head_kv
    first = min(UBATCH, len(q), len(k))
    eq = np.abs(model.pairs(q[:first])) ** 2  # (T, heads, pairs): RoPE leaves it unchanged
    eq = eq.reshape(first, model.n_head_kv, group, -1).sum(axis=2).mean(axis=0)
    centred = k[:first] - key_centre(model, k[:UBATCH])[:first]  # the centre's own keys only
    ek = (np.abs(model.pairs(centred)) ** 2).mean(axis=0)
    # a pair no query (or key) uses would get a scale of 0 (or infinity): floor both
    eq = np.maximum(eq, 1e-6 * eq.mean(axis=-1, keepdims=True))
    ek = np.maximum(ek, 1e-6 * ek.mean(axis=-1, keepdims=True))
    s = (eq / ek) ** (alpha / 4)
    s /= np.exp(np.log(s).mean(axis=-1, keepdims=True))
    return model.unpairs(s + 1j * s)  # both channels of a pair


@dataclass
class SimCache:
    """A treatment applied to one chunk: the maps the forward pass reads K and V through."""

    model: LlamaGguf
    treatment: Treatment
    scales: list[np.ndarray] | None = None  # per layer, with alpha

    def k_map(self, il: int, k: np.ndarray) -> np.ndarray:
        t = self.treatment
        c = key_centre(self.model, k, t.span)
        s = self.scales[il] if self.scales is not None else np.ones(k.shape[1:], F32)
        out = round_trip((k - c) * s, t.k, t.rowsigns, t.kclasses or 1) / s + c
        out[: t.sink] = k[: t.sink]
        return out

    def v_map(self, il: int, v: np.ndarray) -> np.ndarray:
        t = self.treatment
        c = v[:UBATCH].mean(axis=0) if t.vc else np.zeros(v.shape[1:], F32)
        out = round_trip(v - c, t.v, t.rowsigns, t.classes or 1) + c
        out[: t.sink] = v[: t.sink]
        return out


def kld(model: LlamaGguf, exact: np.ndarray, sim: np.ndarray, rows: int = 256) -> float:
    """Mean KL(exact || sim) of the next-token distributions of final hidden rows."""
    total = 0.0
    for lo in range(0, len(exact), rows):
        p = model.log_probs(exact[lo : lo + rows])
        q = model.log_probs(sim[lo : lo + rows])
        total += float((np.exp(p) * (p - q)).sum())
    return total / len(exact)


def treated_hidden(model: LlamaGguf, tokens: list[int], t: Treatment,
                   qs: list[np.ndarray], ks: list[np.ndarray]) -> np.ndarray:
    """The final hidden rows with the cache treated as `t`; qs and ks are the exact pass's
    first queries and keys per layer, which the key scales are measured on."""
    scales = None
    if t.alpha is not None:
        scales = [key_scales(model, q, k, t.alpha) for q, k in zip(qs, ks, strict=True)]
    cache = SimCache(model, t, scales)
    k_map: RowMap | None = cache.k_map if t.k != "f32" else None
    v_map: RowMap | None = cache.v_map if t.v != "f32" else None
    return model.hidden(tokens, k_map, v_map)


def chunk_klds(model: LlamaGguf, tokens: list[int],
               treatments: list[Treatment]) -> dict[Treatment, float]:
    """Each treatment's KLD on one chunk (scored over its second half, as llama-perplexity)."""
    scored = slice(len(tokens) // 2, len(tokens) - 1)
    exact_h, qs, ks = model.queries_and_keys(tokens, UBATCH)
    exact = exact_h[scored]
    return {t: kld(model, exact, treated_hidden(model, tokens, t, qs, ks)[scored])
            for t in treatments}


def answer_log_probs(model: LlamaGguf, prompt: list[int], answer: list[int],
                     treatments: list[Treatment],
                     ) -> Iterator[tuple[Treatment, np.ndarray, np.ndarray]]:
    """Teacher-forced, per treatment as it comes: each answer token's log-probability after
    the prompt, and its margin over the likeliest other token (below 0: greedy decoding
    leaves the answer there)."""
    tokens = [*prompt, *answer]
    rows = slice(len(prompt) - 1, len(tokens) - 1)
    _, qs, ks = model.queries_and_keys(tokens, UBATCH)
    at = np.arange(len(answer))
    for t in treatments:
        lp = model.log_probs(treated_hidden(model, tokens, t, qs, ks)[rows])
        right = lp[at, answer]
        lp[at, answer] = -np.inf
        yield t, right, right - lp.max(axis=1)
