"""Training of the turbo2t/turbo3t tables through the exact trellis rule.

Lloyd iterations with the final encoder in the loop (scale reference, candidate search,
Viterbi, all float32 as the format prescribes): the paths are found with the current
table, then every table entry moves to the weighted centroid of the values its states
reconstruct (c = sum(w d x) / sum(w d^2), rows weighted by 1 / row variance because the
objective is MSE relative to the row's variance; an odd state contributes -x to the entry
it shares with its even twin). After the float iterations the table is scaled to 127,
rounded to int8 and polished by a few projected iterations (update, round, keep if the
MSE falls); last, the search window (centre and spacing of the candidate offsets) is
chosen by the MSE on the training set.

    python -m tqllama.quant.trellis_train turbo3t   (about 15 minutes of one core;
                                                    turbo2t about 7)

prints the table and window as the literals `tqllama/quant/trellis.py` commits.
Deterministic: fixed seeds, NumPy float arithmetic in a fixed order.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from tqllama.quant.codebook import relative_mse, training_blocks
from tqllama.quant.trellis import (
    QK,
    TYPES,
    UNIT_LOG2,
    TrellisQuant,
    sanitize,
    scale_from_code,
)


@dataclass(frozen=True)
class TrainedTable:
    name: str
    table: tuple[int, ...]
    search: tuple[int, ...]
    train_mse: float


def centroid_update(
    x: np.ndarray, d: np.ndarray, states: np.ndarray, table: np.ndarray, signed: bool
) -> np.ndarray:
    """One Lloyd update of the table for fixed paths and scales (entries never used keep
    their value). x (n, 64), d (n,) the blocks' scales, states (n, 64)."""
    x64 = x.astype(np.float64)
    w = 1.0 / np.maximum((x64**2).mean(axis=1), 1e-300)  # 1 / row variance
    dd = d.astype(np.float64)
    if signed:
        sign = np.where(states & 1, -1.0, 1.0)
        idx = (states >> 1).reshape(-1)
    else:
        sign = np.ones(states.shape)
        idx = states.reshape(-1)
    num = np.bincount(
        idx, weights=((w * dd)[:, None] * x64 * sign).reshape(-1), minlength=len(table)
    )
    den = np.bincount(idx, weights=np.repeat(w * dd * dd, QK), minlength=len(table))
    return np.where(den > 0, num / np.maximum(den, 1e-300), table)


def window(centre: int, step: int) -> tuple[int, ...]:
    """Three candidate offsets, `step` apart, in the order they are tried."""
    return (centre - step, centre, centre + step)


def table_centre(table: np.ndarray) -> int:
    """The offset that maps the block RMS to the table's RMS (to the nearest 1/16 octave)."""
    rms = float(np.sqrt(np.mean(np.asarray(table, dtype=np.float64) ** 2)))
    return round(-16 * np.log2(rms / 2**UNIT_LOG2))


def evaluate(name: str, table: np.ndarray, search: tuple[int, ...], x: np.ndarray) -> float:
    q = TrellisQuant(name, table=table, search=search)
    return relative_mse(x, q.roundtrip(x))


def _step(
    name: str, table: np.ndarray, search: tuple[int, ...], x: np.ndarray
) -> tuple[np.ndarray, float]:
    """Encode x with the table, then one centroid update: (new table, MSE before it)."""
    q = TrellisQuant(name, table=table, search=search)
    codes, states = q.quantize_blocks(x)
    mse = relative_mse(x, q.values(codes, states))
    new = centroid_update(x, scale_from_code(codes), states, table, q.type.signed)
    return new, mse


def train_table(
    name: str,
    n_blocks: int = 8000,
    seed: int = 17,
    iterations: int = 100,
    polish: int = 6,
    step: int = 3,
    log: list[str] | None = None,
) -> TrainedTable:
    log = [] if log is None else log
    tt = TYPES[name]
    n = len(tt.table)
    x = sanitize(training_blocks(n_blocks, seed))
    rng = np.random.default_rng(0)
    # Start: the means of n Gaussian quantile cells (absolute values), in random order.
    start = np.abs(np.sort(rng.standard_normal(n * 1000)).reshape(n, 1000).mean(axis=1))
    table = rng.permutation(start)
    for it in range(iterations):
        table = table / np.abs(table).max() * 127
        search = window(table_centre(table), step)
        table, mse = _step(name, table, search, x)
        log.append(f"lloyd {it}: window {search} mse {mse:.6f}")
    table = table / np.abs(table).max() * 127
    search = window(table_centre(table), step)
    best_t = np.round(table)
    best = evaluate(name, best_t, search, x)
    log.append(f"int8: mse {best:.6f}")
    for it in range(polish):
        cand, _ = _step(name, best_t, search, x)
        cand = np.clip(np.round(cand), -127, 127)
        mse = evaluate(name, cand, search, x)
        log.append(f"polish {it}: mse {mse:.6f}")
        if mse >= best:
            break
        best_t, best = cand, mse
    centre = search[1]
    for c in range(centre - 2, centre + 3):
        for s in (2, 3, 4):
            w = window(c, s)
            mse = evaluate(name, best_t, w, x)
            log.append(f"window {w}: mse {mse:.6f}")
            if mse < best:
                best, search = mse, w
    return TrainedTable(name, tuple(int(v) for v in best_t), search, best)


def main(argv: list[str]) -> int:
    names = argv or sorted(TYPES)
    for name in names:
        log: list[str] = []
        res = train_table(name, log=log)
        print("\n".join(log), file=sys.stderr)
        print(f"# {name}: window {res.search}, train mse {res.train_mse:.6f}")
        print(f"TABLE_{name.upper()} = {res.table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
