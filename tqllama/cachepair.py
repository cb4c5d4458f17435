"""The K/V cache-pair grammar of `tqllama plan` and `tqllama bench`: `K/V`, `K/V@bN`,
`K/V@bN:BK/BV`, `K/V@tuned`, `K/V@tuned:FILE`, `K/V@none`, each optionally followed by
environment settings `+NAME=VALUE`, parsed once into a CachePair."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tqllama.errors import TqError
from tqllama.source import sha256_file

# llama.cpp's default boundary types (--cache-type-k-boundary / --cache-type-v-boundary)
BOUNDARY_DEFAULT = "q8_0"

_PAIR_RE = re.compile(r"(\w+)/(\w+)(?:@b(\d+)(?::(\w+)/(\w+))?|@(tuned|none)(?::(.+))?)?")
_SETTING_RE = re.compile(r"([A-Z_][A-Z0-9_]*)=([^\s+=]+)")

# CachePair.policy: llama.cpp's default (the automatic protection of turbo keys), none of it,
# a policy `tqllama tune` makes for the pair's bits, or a policy file
POLICY_DEFAULT, POLICY_NONE, POLICY_TUNED = "", "none", "tuned"


@dataclass(frozen=True, order=True)
class CachePair:
    """The K and V cache types of one run (`-ctk K -ctv V`), written `K/V`.

    With boundary layers (`--cache-boundary-layers N`) the first N and the last N layers keep
    their cache in `k_boundary` / `v_boundary`: written `K/V@bN`, or `K/V@bN:BK/BV` when the
    boundary types are not llama.cpp's default q8_0. N = 0 is the plain pair.

    With a cache policy (`--cache-policy`) every layer has its own types: `K/V@tuned` is a
    policy `tqllama tune` makes at K/V's bits per value, `K/V@tuned:FILE` the policy in FILE,
    `K/V@none` the plain types with llama.cpp's automatic protection of turbo keys turned
    off (`--cache-policy none`); a plain `K/V` is llama.cpp's default.

    Environment settings of the tools' run, `+NAME=VALUE` after the rest (for the
    `TQLLAMA_*` switches of the patched llama.cpp: `q8_0/q8_0+TQLLAMA_CENTER_ALL_KEYS=1`),
    make another pair with the same types; they are kept sorted by name, one spelling each.
    """

    k: str
    v: str
    boundary: int = 0
    k_boundary: str = BOUNDARY_DEFAULT
    v_boundary: str = BOUNDARY_DEFAULT
    policy: str = POLICY_DEFAULT  # "", "none", "tuned" or a policy file's path
    env: tuple[tuple[str, str], ...] = ()  # (NAME, VALUE), sorted by name

    def __post_init__(self) -> None:
        if self.boundary < 0:
            raise TqError(f"boundary layers must not be negative: got {self.boundary}")
        if self.boundary == 0:  # the boundary types mean nothing then: one spelling per pair
            object.__setattr__(self, "k_boundary", BOUNDARY_DEFAULT)
            object.__setattr__(self, "v_boundary", BOUNDARY_DEFAULT)

    @classmethod
    def parse(cls, text: str) -> CachePair:
        head, *settings = text.strip().split("+")
        env: dict[str, str] = {}
        for setting in settings:
            s = _SETTING_RE.fullmatch(setting)
            if s is None or s.group(1) in env:
                why = "is not NAME=VALUE" if s is None else "sets a variable twice"
                raise TqError(f"cache pair {text!r}: {setting!r} {why}: write settings like "
                              "q8_0/q8_0+TQLLAMA_CENTER_ALL_KEYS=1, each name once")
            env[s.group(1)] = s.group(2)
        m = _PAIR_RE.fullmatch(head)
        if m is None:
            raise TqError(f"cache pair {text!r} is not K/V, K/V@bN or K/V@tuned: write it like "
                          "q8_0/turbo3, turbo2/turbo2@b2 (2 boundary layers at each end in "
                          "q8_0), turbo2/turbo2@b2:f16/f16, turbo4/turbo4@tuned[:FILE] or "
                          "turbo4/turbo4@none")
        k, v, n, kb, vb, policy, path = m.groups()
        if policy == POLICY_NONE and path:
            raise TqError(f"cache pair {text!r}: @none takes no file (@tuned:FILE does)")
        return cls(k, v, int(n or 0), kb or BOUNDARY_DEFAULT, vb or BOUNDARY_DEFAULT,
                   path or policy or POLICY_DEFAULT, tuple(sorted(env.items())))

    @property
    def policy_file(self) -> str | None:
        """The policy's path (`@tuned:FILE`, or `@tuned` once the sweep has made it)."""
        return self.policy if self.policy not in (POLICY_DEFAULT, POLICY_NONE,
                                                  POLICY_TUNED) else None

    @property
    def label(self) -> str:
        out = f"{self.k}/{self.v}"
        if self.boundary:
            out += f"@b{self.boundary}"
            if (self.k_boundary, self.v_boundary) != (BOUNDARY_DEFAULT, BOUNDARY_DEFAULT):
                out += f":{self.k_boundary}/{self.v_boundary}"
        elif self.policy == POLICY_NONE:
            out += "@none"
        elif self.policy:
            out += "@tuned" + (f":{self.policy}" if self.policy_file else "")
        return out + "".join(f"+{name}={value}" for name, value in self.env)

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
        if self.policy == POLICY_TUNED:
            raise TqError(f"{self.label}: the policy is not made yet (the sweep makes it with "
                          "tqllama tune before the runs)")
        if self.policy:
            out += ["--cache-policy", self.policy]
        return out

    def key_fields(self) -> dict[str, object]:
        """What identifies the pair in a run's key; plain pairs keep the keys they always had."""
        fields: dict[str, object] = {"k": self.k, "v": self.v}
        if self.boundary:
            fields["boundary"] = [self.boundary, self.k_boundary, self.v_boundary]
        if self.policy:
            # a policy file by what it holds: an edited policy runs again
            path = self.policy_file
            fields["policy"] = sha256_file(Path(path)) if path else self.policy
        if self.env:
            fields["env"] = dict(self.env)
        return fields

    @property
    def slug(self) -> str:
        """The label as a piece of a file name."""
        # a path has no place in a file name: a policy file's own name does
        head = (f"{self.k}-{self.v}-tuned-{Path(self.policy_file).stem}" if self.policy_file
                else self.label.split("+")[0])
        settings = "".join(f"+{name}={value}" for name, value in self.env)
        return re.sub(r"[^\w.-]", "-", head + settings)
