"""The measurements behind `tqllama verify`: every reference quantizer on the same data.

- MSE per value relative to each row's variance, on rotated Gaussian rows of 64: once
  with unit variance (`mse`), once with row std log-uniform over 1e-2..1e2 (`mse_logstd`).
  For unit vectors this equals the paper's E||x - x̂||², so PolarQuant is on the same axis.
- Inner products <y, x̂> - <y, x> on rows of 128 (two blocks) with a correlated query
  y = x + z (z independent, same law): `ip_bias` (mean) and `ip_std` (standard deviation).
  A query independent of x would hide bias by symmetry; the stage-1 (MSE) quantizers
  shrink inner products along x, the QJL types must not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tqllama.quant.codebook import beta_lloyd_max, relative_mse, training_blocks
from tqllama.quant.polar import PolarQuant
from tqllama.quant.qjl import TurboQuant
from tqllama.quant.reference import names, reference

PAPER_POLAR_MSE = {1: 0.36, 2: 0.117, 3: 0.03, 4: 0.009}  # arXiv 2504.19874, Theorem 1
BARS = {"turbo4": 0.0062, "turbo3": 0.0265, "turbo2": 0.108,
        "turbo3t": 0.0195, "turbo2t": 0.080}  # the trellis types': issue 17's


@dataclass(frozen=True)
class Quantizer:
    name: str
    bits_per_value: float
    roundtrip: Callable[[np.ndarray], np.ndarray]  # float32 rows -> float32, same shape
    notes: dict[str, float]


def _bytes_roundtrip(q: TurboQuant) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: q.dequantize(q.quantize(x), x.size).reshape(x.shape)


def quantizers() -> list[Quantizer]:
    out = []
    for name in names():
        ref = reference(name)
        assert ref is not None
        notes = {"bar": BARS[name]} if name in BARS else {}
        out.append(Quantizer(name, ref.bits_per_value, ref.roundtrip, notes))
    for bits in (4, 3, 2):
        qj = TurboQuant(bits)
        out.append(Quantizer(f"turbo{bits}_qjl", qj.bits_per_value, _bytes_roundtrip(qj), {}))
    for d in (64, 128):
        for bits in (1, 2, 3, 4):
            p = PolarQuant(bits, d)
            notes = {
                "paper_mse": PAPER_POLAR_MSE[bits],
                "lloyd_max_mse": d * beta_lloyd_max(bits, d).mse,
                "lower_bound": 4.0**-bits,
            }
            out.append(Quantizer(f"polar{bits}_d{d}", p.bits_per_value, _polar(p), notes))
    return out


def _polar(p: PolarQuant) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: p.roundtrip(x.reshape(-1, p.d)).reshape(x.shape)


def _unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).standard_normal((n, d))
    return (u / np.linalg.norm(u, axis=1, keepdims=True)).astype(np.float32)


def run(rows: int = 20_000, seed: int = 0) -> list[dict[str, float | str]]:
    """One result object per quantizer; `rows` rows of 64 for each MSE data set."""
    unit = training_blocks(rows, seed + 1, log_std=False)
    spread = training_blocks(rows, seed + 2)
    pairs = max(rows // 2, 1)
    x_ip = training_blocks(2 * pairs, seed + 3, log_std=False).reshape(pairs, 128)
    y_ip = x_ip + training_blocks(2 * pairs, seed + 4, log_std=False).reshape(pairs, 128)
    true_ip = np.einsum("ij,ij->i", x_ip.astype(np.float64), y_ip)

    results: list[dict[str, float | str]] = []
    for q in quantizers():
        res: dict[str, float | str] = {"name": q.name, "bits_per_value": q.bits_per_value}
        if q.name.startswith("polar"):
            d = int(q.name.split("_d")[1])
            x = _unit_vectors(rows, d, seed + 5)
            res["mse"] = float(np.mean(np.sum((x - q.roundtrip(x)) ** 2, axis=1)))
        else:
            res["mse"] = relative_mse(unit, q.roundtrip(unit))
            res["mse_logstd"] = relative_mse(spread, q.roundtrip(spread))
        err = np.einsum("ij,ij->i", q.roundtrip(x_ip).astype(np.float64), y_ip) - true_ip
        res["ip_bias"] = float(err.mean())
        res["ip_std"] = float(err.std())
        res["ip_bias_over_std"] = float(err.mean() / err.std())
        res.update(q.notes)
        results.append(res)
    return results


def format_table(results: list[dict[str, float | str]]) -> str:
    head = (
        f"{'name':<12} {'bits/v':>6} {'mse':>9} {'mse_logstd':>10} {'ip_bias':>9} "
        f"{'ip_std':>8} {'bias/std':>8}  reference"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        ref = ""
        if "bar" in r:
            ref = f"bar {r['bar']}"
        elif "paper_mse" in r:
            ref = (
                f"paper {r['paper_mse']}, Lloyd-Max {r['lloyd_max_mse']:.5f}, "
                f"bound {r['lower_bound']:.5f}"
            )
        logstd = f"{r['mse_logstd']:.6f}" if "mse_logstd" in r else "-"
        lines.append(
            f"{r['name']:<12} {r['bits_per_value']:>6.3f} {r['mse']:>9.6f} {logstd:>10} "
            f"{r['ip_bias']:>9.4f} {r['ip_std']:>8.4f} {r['ip_bias_over_std']:>8.4f}  {ref}"
        )
    return "\n".join(lines)
