"""K/V cache pairs and the named sets of them a sweep runs (`--preset`)."""

from __future__ import annotations

from dataclasses import dataclass

from tqllama.errors import TqError


@dataclass(frozen=True, order=True)
class CachePair:
    """The K and V cache types of one run (`-ctk K -ctv V`), written `K/V`."""

    k: str
    v: str

    @classmethod
    def parse(cls, text: str) -> CachePair:
        k, sep, v = text.strip().partition("/")
        if not sep or not k or not v or "/" in v:
            raise TqError(f"cache pair {text!r} is not K/V: write it like q8_0/turbo3")
        return cls(k, v)

    @property
    def label(self) -> str:
        return f"{self.k}/{self.v}"


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


def _union(*groups: tuple[CachePair, ...]) -> tuple[CachePair, ...]:
    return tuple(dict.fromkeys(p for group in groups for p in group))


PRESETS: dict[str, tuple[CachePair, ...]] = {
    "default": _DEFAULT,
    "asymmetric": _ASYMMETRIC,
    "full": _union(_DEFAULT, _ASYMMETRIC, _pairs("iq4_nl/iq4_nl"), _QJL),
}


def preset(name: str) -> tuple[CachePair, ...]:
    try:
        return PRESETS[name]
    except KeyError:
        raise TqError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}") from None
