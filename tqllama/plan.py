"""KV-cache size of a model for each cache-type pair and context, and what fits in memory.

Replicates the pinned llama.cpp exactly (to the byte) for plain and sliding-window
caches:

- `llama_context` (src/llama-context.cpp:290-303) pads n_ctx up to a multiple of 256;
  with n_seq_max > 1 and no unified cache every sequence gets its own stream of
  n_ctx_seq = pad256(n_ctx / n_seq_max) cells.
- `llama_kv_cache` (src/llama-kv-cache.cpp:233-234) allocates, per cached layer, K as
  [n_embd_k_gqa, kv_size, n_stream] of type_k and V likewise (no V for MLA); its size
  line sums ggml_nbytes over the layers.
- `llama_kv_cache_iswa` (src/llama-kv-cache-iswa.cpp:73) gives the sliding-window
  layers pad256(min(kv_size, n_swa * (unified ? n_seq : 1) + n_ubatch)) cells.

Assumes flash attention is on or auto (the default, and required for a quantized V):
without it llama.cpp stores V transposed and pads it to the widest layer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tqllama.cachepair import CachePair
from tqllama.errors import TqError
from tqllama.kvshape import ModelShape
from tqllama.policy import Policy
from tqllama.types import CacheType, cache_type

# `--cache` when none is given
DEFAULT_PAIRS = ("f16/f16", "q8_0/q8_0", "q4_0/q4_0", "turbo4/turbo4", "turbo4/turbo3",
                 "turbo3/turbo3", "turbo2/turbo2")

CTX_PAD = 256  # llama_context and the SWA cache both round cells up to this
MAX_CTX = 1 << 24  # search bound for the longest context that fits
MAX_SEQ = 256  # LLAMA_MAX_SEQ (src/llama-cparams.h)


@dataclass(frozen=True)
class Settings:
    """The llama.cpp context parameters that change the cache size."""

    n_seq: int = 1  # -np / --parallel: n_seq_max
    unified: bool = False  # --kv-unified: one stream shared by all sequences
    n_ubatch: int = 512  # -ub
    swa_full: bool = False  # --swa-full: SWA layers get the full context


@dataclass(frozen=True)
class KvSize:
    ctx: int  # the requested -c
    cells: int  # per stream, full-attention layers (kv_size in the log line)
    swa_cells: int  # per stream, sliding-window layers (0 without SWA)
    k_bytes: int
    v_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.k_bytes + self.v_bytes


def _pad(n: int, to: int = CTX_PAD) -> int:
    return (n + to - 1) // to * to


def row_bytes(ctype: CacheType, n: int) -> int:
    """ggml_row_size(type, n): bytes of n values (n a multiple of the block size)."""
    type_size = round(ctype.bits_per_value * ctype.block_size / 8)
    return n // ctype.block_size * type_size


def cells(shape: ModelShape, ctx: int, settings: Settings) -> tuple[int, int, int]:
    """(n_stream, cells of a full layer, cells of a SWA layer) for a `-c ctx` context."""
    if ctx <= 0:
        raise TqError(f"context {ctx} is not positive: pass --ctx with sizes like 4096,32768")
    n_ctx = _pad(ctx)
    if settings.unified:
        n_stream, n_ctx_seq = 1, n_ctx
    else:
        n_stream, n_ctx_seq = settings.n_seq, _pad(n_ctx // settings.n_seq)
    if shape.n_swa == 0:
        return n_stream, n_ctx_seq, 0
    if settings.swa_full:
        return n_stream, n_ctx_seq, n_ctx_seq
    # n_ubatch = min(n_batch, n_ubatch) and n_batch <= the unpadded n_ctx (causal models)
    n_ubatch = min(ctx, settings.n_ubatch)
    window = shape.n_swa * (settings.n_seq if settings.unified else 1) + n_ubatch
    return n_stream, n_ctx_seq, _pad(min(n_ctx_seq, window))


def kv_size(shape: ModelShape, type_k: CacheType, type_v: CacheType, ctx: int,
            settings: Settings, layers: Sequence[tuple[CacheType, CacheType]] = ()) -> KvSize:
    """Bytes of the K and V caches llama.cpp allocates for `-c ctx`; `layers`: a cache
    policy's (K, V) types of every layer, instead of type_k / type_v for all."""
    n_stream, full, swa = cells(shape, ctx, settings)
    k = v = 0
    for il, layer in enumerate(shape.layers):
        if not layer.cached:
            continue
        layer_k, layer_v = layers[il] if il < len(layers) else (type_k, type_v)
        n_cells = (swa if layer.swa else full) * n_stream
        k += row_bytes(layer_k, layer.k_width) * n_cells
        if not shape.mla:
            v += row_bytes(layer_v, layer.v_width) * n_cells
    return KvSize(ctx, full, swa, k, v)


def unsupported(shape: ModelShape, type_k: CacheType, type_v: CacheType) -> str | None:
    """Why llama.cpp refuses the pair for this model (src/llama-context.cpp:3835-3871)."""
    if shape.mla and type_k != type_v:
        return "MLA models need the same K and V type"
    trunk = shape.layers[: shape.n_trunk]
    for role, ctype, heads in (("K", type_k, {la.head_k for la in trunk}),
                               ("V", type_v, {la.head_v for la in trunk})):
        bad = sorted(h for h in heads if h % ctype.block_size)
        if bad:
            return (f"{role} head size {bad[0]} is not a multiple of {ctype.name}'s "
                    f"block of {ctype.block_size}")
    return None


def longest_fit(shape: ModelShape, type_k: CacheType, type_v: CacheType, budget: int,
                settings: Settings, layers: Sequence[tuple[CacheType, CacheType]] = ()) -> int:
    """The largest `-c` (a multiple of 256) with weights + KV <= budget bytes; 0 if none."""
    def fits(ctx: int) -> bool:
        kv = kv_size(shape, type_k, type_v, ctx, settings, layers)
        return shape.weight_bytes + kv.total_bytes <= budget

    step = CTX_PAD * (1 if settings.unified else settings.n_seq)
    lo, hi = 0, MAX_CTX // step  # fits(lo * step) holds or lo == 0; fits(hi * step) is unknown
    if fits(hi * step):
        return hi * step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid * step):
            lo = mid
        else:
            hi = mid
    return lo * step


_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}


def parse_memory(text: str) -> int:
    """Bytes in '36GB' (10^9), '36GiB' or '36G' (2^30), '512MiB', '1.5TB', '1000000'."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise TqError(f"cannot read memory size {text!r}: write a number and a unit, "
                      "e.g. 36GB, 36GiB, 512MiB")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise TqError(f"memory size {text!r} is not positive: pass e.g. --memory 36GB")
    return value


def parse_pair(text: str) -> tuple[CacheType, CacheType]:
    """'q8_0/turbo3' -> (K type, V type); a single name means the same type for both.

    The grammar is the sweep's (CachePair). Plan sizes one K and one V type for every layer,
    so a pair with boundary layers (`K/V@bN`) is refused.
    """
    pair = CachePair.parse(text if "/" in text else f"{text}/{text}")
    if pair.boundary:
        raise TqError(f"plan sizes caches with one K and one V type for every layer, not "
                      f"boundary layers: pass {pair.plain.label} instead of {text}")
    if pair.env:  # a setting can add rows to the cache (TQLLAMA_CENTER_ALL_KEYS: first keys)
        raise TqError(f"plan sizes caches from their types, not environment settings: pass "
                      f"{pair.plain.label} instead of {text}")
    return cache_type(pair.k), cache_type(pair.v)


def parse_ctx_list(text: str) -> list[int]:
    """'4096,32k,128K' -> [4096, 32768, 131072]."""
    out = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*([kK]?)\s*", item)
        if m is None or int(m.group(1)) == 0:
            raise TqError(f"cannot read context size {item!r}: pass --ctx like 4096,32768 or 32k")
        out.append(int(m.group(1)) * (1024 if m.group(2) else 1))
    return out


def default_contexts(shape: ModelShape) -> list[int]:
    """4096, 32768, 131072 and the model's training context."""
    return sorted({4096, 32768, 131072} | ({shape.n_ctx_train} if shape.n_ctx_train else set()))


@dataclass(frozen=True)
class PairPlan:
    type_k: CacheType
    type_v: CacheType
    problem: str | None  # why llama.cpp would refuse the pair; sizes still computed
    sizes: tuple[KvSize, ...]
    fit_ctx: int | None  # None without a memory budget
    policy: str | None = None  # a cache policy file: its per-layer types, not type_k/type_v
    protected: tuple[int, ...] = ()  # layers whose K the automatic protection keeps in q8_0

    @property
    def label(self) -> str:
        return f"policy {self.policy}" if self.policy else f"{self.type_k.name}/{self.type_v.name}"


@dataclass(frozen=True)
class Plan:
    shape: ModelShape
    model_name: str
    settings: Settings
    contexts: tuple[int, ...]
    budget: int | None
    pairs: tuple[PairPlan, ...]


def make_plan(shape: ModelShape, model_name: str, contexts: Sequence[int],
              pairs: Sequence[tuple[CacheType, CacheType]], settings: Settings,
              budget: int | None, policies: Sequence[tuple[str, Policy]] = (),
              protected: Sequence[int] = ()) -> Plan:
    """`protected`: the layers whose K a turbo K type keeps in q8_0 on this model without a
    policy (tqllama.policy.auto_protected)."""
    if not 1 <= settings.n_seq <= MAX_SEQ:
        raise TqError(f"--parallel {settings.n_seq}: llama.cpp takes 1 to {MAX_SEQ} sequences")
    if settings.n_ubatch < 1:
        raise TqError(f"--ubatch {settings.n_ubatch} is not positive: pass e.g. 512")

    def sized(type_k: CacheType, type_v: CacheType, problem: str | None,
              layers: Sequence[tuple[CacheType, CacheType]], policy: str | None = None,
              kept: tuple[int, ...] = ()) -> PairPlan:
        sizes = tuple(kv_size(shape, type_k, type_v, c, settings, layers) for c in contexts)
        fit = None
        if budget is not None and problem is None:
            fit = longest_fit(shape, type_k, type_v, budget, settings, layers)
        return PairPlan(type_k, type_v, problem, sizes, fit, policy, kept)

    out = []
    for type_k, type_v in pairs:
        kept = tuple(protected) if type_k.turbo else ()
        layers = [(cache_type("q8_0") if il in kept else type_k, type_v)
                  for il in range(len(shape.layers))] if kept else []
        out.append(sized(type_k, type_v, unsupported(shape, type_k, type_v), layers,
                         kept=kept))
    for name, policy in policies:
        layers = [(cache_type(k), cache_type(v)) for k, v in zip(policy.k, policy.v,
                                                                 strict=True)]
        problem = next(filter(None, (unsupported(_one(shape, il), k, v)
                                     for il, (k, v) in enumerate(layers))), None)
        out.append(sized(*layers[0], problem, layers, policy=name))
    return Plan(shape, model_name, settings, tuple(contexts), budget, tuple(out))


def _one(shape: ModelShape, il: int) -> ModelShape:
    """The shape with layer il alone in its trunk: unsupported() on one layer's types."""
    return replace(shape, layers=(shape.layers[il],), n_trunk=1)
