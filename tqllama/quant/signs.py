"""The fixed +-1 sign sequences of the turbo formats (docs/FORMAT.md, "Rotation").

One splitmix64 stream seeded with "tqllama!" gives every sign the project uses:
entries 0..511 are `signs` (the D of the randomized Hadamard rotation R = D H D),
entries 512..639 are `qjl_signs` (D2 = the first 64, D3 = the next 64, of the QJL
projection S = H D3 H D2, see docs/FORMAT-QJL.md). Pure integer arithmetic: the C
tables are generated from here.
"""

from __future__ import annotations

import numpy as np

from tqllama.errors import TqError

SEED = 0x7471_6C6C_616D_6121  # "tqllama!" as ASCII, big-endian
N_SIGNS = 512
N_QJL_SIGNS = 128

_MASK = (1 << 64) - 1


def splitmix64_signs(count: int, seed: int = SEED) -> list[int]:
    """The first `count` signs of the stream: -1 where bit 63 of the output is set."""
    out: list[int] = []
    state = seed
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & _MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        z = z ^ (z >> 31)
        out.append(-1 if z >> 63 else 1)
    return out


_STREAM = splitmix64_signs(N_SIGNS + N_QJL_SIGNS)

SIGNS: tuple[int, ...] = tuple(_STREAM[:N_SIGNS])
QJL_SIGNS: tuple[int, ...] = tuple(_STREAM[N_SIGNS:])


def rotation_signs(n: int) -> np.ndarray:
    """D_n as a float32 vector: the first n entries of `signs`."""
    if not 0 < n <= N_SIGNS:
        raise TqError(f"rotation size {n} is outside 1..{N_SIGNS}")
    return np.array(SIGNS[:n], dtype=np.float32)


def qjl_signs() -> tuple[np.ndarray, np.ndarray]:
    """(D2, D3) of the QJL projection, 64 each, float32."""
    d = np.array(QJL_SIGNS, dtype=np.float32)
    return d[:64], d[64:]
