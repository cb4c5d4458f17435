"""The KV-cache types tqllama knows: ggml enum id, block size and bits per value.

One table for the whole project: the build's patches, the reference quantizers and the
bench tables all read it. Enum ids of the turbo types are stable once chosen (they end
up in state / slot-save files).
"""

from __future__ import annotations

from dataclasses import dataclass

from tqllama.errors import TqError


@dataclass(frozen=True)
class CacheType:
    """One ggml type usable as a KV cache (`-ctk` / `-ctv` name = `name`)."""

    name: str
    ggml_id: int
    bits_per_value: float
    block_size: int
    turbo: bool = False

    @property
    def compression_vs_f16(self) -> float:
        return 16.0 / self.bits_per_value


F32 = 0
F16 = 1
Q4_0 = 2
Q4_1 = 3
Q5_0 = 6
Q5_1 = 7
Q8_0 = 8
IQ4_NL = 20
BF16 = 30
TURBO2 = 43
TURBO3 = 44
TURBO4 = 45
TURBO2_QJL = 46
TURBO3_QJL = 47
TURBO4_QJL = 48
TURBO2T = 50
TURBO3T = 51
TURBO5 = 52

CACHE_TYPES: dict[str, CacheType] = {
    t.name: t
    for t in (
        CacheType("f32", F32, 32.0, 1),
        CacheType("f16", F16, 16.0, 1),
        CacheType("bf16", BF16, 16.0, 1),
        CacheType("q8_0", Q8_0, 8.5, 32),
        CacheType("q5_1", Q5_1, 6.0, 32),
        CacheType("q5_0", Q5_0, 5.5, 32),
        CacheType("q4_1", Q4_1, 5.0, 32),
        CacheType("q4_0", Q4_0, 4.5, 32),
        CacheType("iq4_nl", IQ4_NL, 4.5, 32),
        CacheType("turbo5", TURBO5, 5.25, 64, turbo=True),
        CacheType("turbo4", TURBO4, 4.25, 64, turbo=True),
        CacheType("turbo3", TURBO3, 3.25, 64, turbo=True),
        CacheType("turbo2", TURBO2, 2.25, 64, turbo=True),
        CacheType("turbo4_qjl", TURBO4_QJL, 4.5, 64, turbo=True),
        CacheType("turbo3_qjl", TURBO3_QJL, 3.5, 64, turbo=True),
        CacheType("turbo2_qjl", TURBO2_QJL, 2.5, 64, turbo=True),
        CacheType("turbo3t", TURBO3T, 3.25, 64, turbo=True),
        CacheType("turbo2t", TURBO2T, 2.25, 64, turbo=True),
    )
}

TURBO_TYPES: tuple[str, ...] = tuple(n for n, t in CACHE_TYPES.items() if t.turbo)

# By ggml enum id: the ids above are what llama-cpp-python takes as `type_k` / `type_v`
# (`Llama(..., type_k=TURBO4)`), CACHE_TYPES_BY_ID[TURBO4].bits_per_value is 4.25.
CACHE_TYPES_BY_ID: dict[int, CacheType] = {t.ggml_id: t for t in CACHE_TYPES.values()}


def cache_type(name: str) -> CacheType:
    """The cache type called `name`; TqError listing the known names otherwise."""
    try:
        return CACHE_TYPES[name]
    except KeyError:
        known = ", ".join(CACHE_TYPES)
        raise TqError(f"unknown KV-cache type {name!r}: use one of {known}") from None
