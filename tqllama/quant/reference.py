"""The reference round trip of every cache type this package models, by llama.cpp's name:
what `tqllama verify` measures and what `tqllama tune` predicts a type's error from."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from tqllama.quant import baselines, trellis
from tqllama.quant.turbo import TurboQuantMSE

TURBO = ("turbo5", "turbo4", "turbo3", "turbo2")


class Reference(NamedTuple):
    roundtrip: Callable[[np.ndarray], np.ndarray]  # float32 rows -> float32, same shape
    bits_per_value: float


def names() -> tuple[str, ...]:
    """Every cache type with a reference, turbo types first."""
    return (*TURBO, *trellis.TYPES, *baselines.BASELINES)


def reference(name: str) -> Reference | None:
    """How cache type `name` quantizes and dequantizes rows of 64; None for a type this
    package has no reference of."""
    if name in TURBO:
        q = TurboQuantMSE(int(name[-1]))
        return Reference(q.roundtrip, q.bits_per_value)
    if name in trellis.TYPES:
        qt = trellis.TrellisQuant(name)
        return Reference(qt.roundtrip, qt.bits_per_value)
    if name in baselines.BASELINES:
        return Reference(*baselines.BASELINES[name])
    return None
