"""K/V cache pairs and the named sets of them a sweep runs (`--preset`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tqllama.errors import TqError

# llama.cpp's default boundary types (--cache-type-k-boundary / --cache-type-v-boundary)
BOUNDARY_DEFAULT = "q8_0"

_PAIR_RE = re.compile(r"(\w+)/(\w+)(?:@b(\d+)(?::(\w+)/(\w+))?)?")


@dataclass(frozen=True, order=True)
class CachePair:
    """The K and V cache types of one run (`-ctk K -ctv V`), written `K/V`.

    With boundary layers (`--cache-boundary-layers N`) the first N and the last N layers keep
    their cache in `k_boundary` / `v_boundary`: written `K/V@bN`, or `K/V@bN:BK/BV` when the
    boundary types are not llama.cpp's default q8_0. N = 0 is the plain pair.
    """

    k: str
    v: str
    boundary: int = 0
    k_boundary: str = BOUNDARY_DEFAULT
    v_boundary: str = BOUNDARY_DEFAULT

    def __post_init__(self) -> None:
        if self.boundary < 0:
            raise TqError(f"boundary layers must not be negative: got {self.boundary}")
        if self.boundary == 0:  # the boundary types mean nothing then: one spelling per pair
            object.__setattr__(self, "k_boundary", BOUNDARY_DEFAULT)
            object.__setattr__(self, "v_boundary", BOUNDARY_DEFAULT)

    @classmethod
    def parse(cls, text: str) -> CachePair:
        m = _PAIR_RE.fullmatch(text.strip())
        if m is None:
            raise TqError(f"cache pair {text!r} is not K/V or K/V@bN: write it like q8_0/turbo3, "
                          "turbo2/turbo2@b2 (2 boundary layers at each end in q8_0) or "
                          "turbo2/turbo2@b2:f16/f16")
        k, v, n, kb, vb = m.groups()
        return cls(k, v, int(n or 0), kb or BOUNDARY_DEFAULT, vb or BOUNDARY_DEFAULT)

    @property
    def label(self) -> str:
        out = f"{self.k}/{self.v}"
        if self.boundary:
            out += f"@b{self.boundary}"
            if (self.k_boundary, self.v_boundary) != (BOUNDARY_DEFAULT, BOUNDARY_DEFAULT):
                out += f":{self.k_boundary}/{self.v_boundary}"
        return out

    @property
    def plain(self) -> CachePair:
        """The same K/V types without boundary layers."""
        return CachePair(self.k, self.v)

    @property
    def types(self) -> set[str]:
        """Every cache type the run uses."""
        used = {self.k, self.v}
        return used | {self.k_boundary, self.v_boundary} if self.boundary else used

    def args(self) -> list[str]:
        """The cache options of llama-perplexity and llama-bench (both take the same names)."""
        out = ["-ctk", self.k, "-ctv", self.v]
        if self.boundary:
            out += ["--cache-boundary-layers", str(self.boundary),
                    "-ctkb", self.k_boundary, "-ctvb", self.v_boundary]
        return out

    def key_fields(self) -> dict[str, object]:
        """What identifies the pair in a run's key; plain pairs keep the keys they always had."""
        fields: dict[str, object] = {"k": self.k, "v": self.v}
        if self.boundary:
            fields["boundary"] = [self.boundary, self.k_boundary, self.v_boundary]
        return fields

    @property
    def slug(self) -> str:
        """The label as a piece of a file name."""
        return self.label.replace("/", "-").replace("@", "-").replace(":", "-")


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


def _union(*groups: tuple[CachePair, ...]) -> tuple[CachePair, ...]:
    return tuple(dict.fromkeys(p for group in groups for p in group))


PRESETS: dict[str, tuple[CachePair, ...]] = {
    "default": _DEFAULT,
    "asymmetric": _ASYMMETRIC,
    "full": _union(_DEFAULT, _ASYMMETRIC, _pairs("iq4_nl/iq4_nl"), _QJL),
    "seed": _union(_SEED),
}


def preset(name: str) -> tuple[CachePair, ...]:
    try:
        return PRESETS[name]
    except KeyError:
        raise TqError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}") from None
