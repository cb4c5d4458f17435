"""The K/V cache-pair grammar of `tqllama plan` and `tqllama bench`: `K/V`, `K/V@bN`,
`K/V@bN:BK/BV`, parsed once into a CachePair."""

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
