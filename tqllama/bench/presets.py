"""The named sets of K/V cache pairs a sweep runs (`--preset`)."""

from __future__ import annotations

from tqllama.cachepair import CachePair
from tqllama.errors import TqError


def _pairs(*labels: str) -> tuple[CachePair, ...]:
    return tuple(CachePair.parse(label) for label in labels)


_DEFAULT = _pairs(
    "f16/f16", "q8_0/q8_0", "q4_0/q4_0", "turbo4/turbo4", "turbo3/turbo3", "turbo2/turbo2",
    "q8_0/turbo3", "turbo4/turbo3",
)
# "V compression is nearly free, K is everything" (anchors.md): hold one side at q8_0;
# q8_0/q8_0 is there as the table's speed baseline.
_ASYMMETRIC = _pairs(
    "q8_0/q8_0", "q8_0/q4_0", "q8_0/turbo4", "q8_0/turbo3", "q8_0/turbo2",
    "turbo4/q8_0", "turbo3/q8_0", "turbo2/q8_0", "turbo4/turbo3", "turbo4/turbo2",
)
# The two-stage (QJL) types are K types: measured against q8_0 V only.
_QJL = _pairs("turbo4_qjl/q8_0", "turbo3_qjl/q8_0", "turbo2_qjl/q8_0")
# The seed's findings, one group each: V compression (q8_0 K), K compression (q8_0 V),
# boundary layers (turbo2 with N = 0, 1, 2, 4 layers at each end in q8_0, between turbo2 and
# turbo3), and QJL keys against single-stage keys of the same bits.
SEED_BOUNDARY = (0, 1, 2, 4)
_SEED = _pairs(
    "q8_0/q8_0", "q8_0/turbo4", "q8_0/turbo3", "q8_0/turbo2",
    "turbo4/q8_0", "turbo3/q8_0", "turbo2/q8_0",
    "turbo3/turbo3", *(f"turbo2/turbo2@b{n}" for n in SEED_BOUNDARY),
) + _QJL


# Long context (issue 16): KLD at c=8192 and passkey retrieval at depth, for the pairs whose
# lead matters there; sized for 30 minutes on 2 cores with SmolLM2 (see PRESET_SETTINGS).
_LONG = _pairs("q8_0/q8_0", "q4_0/q4_0", "turbo4/turbo4", "turbo4/turbo3")


# The trellis-coded types (issue 17) beside what they must beat: rotated q4_0 and the scalar
# turbo types of the same bits, as K and V and as V under turbo4 keys.
_TRELLIS = _pairs(
    "q4_0/q4_0", "turbo3/turbo3", "turbo3t/turbo3t", "turbo4/turbo3", "turbo4/turbo3t",
    "turbo2/turbo2", "turbo2t/turbo2t",
)


# turbo5 (issue 21's step between turbo4 and q8_0) beside the types around it in bits.
_TURBO5 = _pairs("q8_0/q8_0", "q5_0/q5_0", "turbo5/turbo5", "turbo5/turbo4", "turbo4/turbo4")


def _union(*groups: tuple[CachePair, ...]) -> tuple[CachePair, ...]:
    return tuple(dict.fromkeys(p for group in groups for p in group))


PRESETS: dict[str, tuple[CachePair, ...]] = {
    "default": _DEFAULT,
    "asymmetric": _ASYMMETRIC,
    "full": _union(_DEFAULT, _ASYMMETRIC, _pairs("iq4_nl/iq4_nl"), _QJL, _TRELLIS, _TURBO5),
    "seed": _union(_SEED),
    "long": _LONG,
    "trellis": _TRELLIS,
    "turbo5": _TURBO5,
}

# What a preset sets besides its pairs; an option given on the command line (or in --config)
# wins. `long`: one chunk of 8192 tokens (4096 scored), no llama-bench, one pass key in the
# middle of a 2048-token context asked at 2048, 4096 and 8192 (1K, 3K and 7K tokens back; one
# 8192-token prefill per pair). For a stable mean add --chunks 4 (about 4x the KLD time), for
# more keys --passkey-depths 0.1,0.5,0.9 (a prefill each); on a model trained for longer
# contexts e.g. --ctx 32768 --passkey 8192,16384,32768.
PRESET_SETTINGS: dict[str, dict[str, object]] = {
    "long": {"ctx": 8192, "chunks": 1, "depths": (), "passkey": (2048, 4096, 8192),
             "passkey_depths": (0.5,)},
}


def preset(name: str) -> tuple[CachePair, ...]:
    try:
        return PRESETS[name]
    except KeyError:
        raise TqError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}") from None
