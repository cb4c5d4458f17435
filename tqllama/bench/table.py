"""Comparison table of a sweep: bits, memory, quality against f16, speed against a baseline.

Quality comes from the `--kl-divergence` runs; speed from llama-bench, as tokens/s and as
a ratio to the baseline pair (q8_0/q8_0 unless told) at the same test and depth.

ΔPPL is PPL(Q) over the f16 cache's PPL from full-precision logits (the base run, or the
f16/f16 pair), not llama-perplexity's "Mean PPL(Q)/PPL(base)": its PPL(base) comes from
the stored base log-probabilities, rounded to 16 bits, which reads about 0.16% low on
SmolLM2 (f16/f16 against itself shows +0.16%, as large as q8_0's whole effect). The
uncertainty is still llama-perplexity's, which accounts for the correlation of the two.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from tqllama.bench.parse_perplexity import Estimate
from tqllama.bench.presets import CachePair
from tqllama.bench.store import RunRecord
from tqllama.errors import TqError
from tqllama.types import CACHE_TYPES

FORMATS = ("md", "csv", "json")
DEFAULT_BASELINE = CachePair("q8_0", "q8_0")

SpeedKey = tuple[str, int]  # (llama-bench test name, KV depth)


@dataclass(frozen=True)
class Speed:
    avg_ts: float
    stddev_ts: float
    ratio: float | None  # to the baseline pair at the same test and depth


@dataclass(frozen=True)
class PairRow:
    pair: CachePair
    bits_k: float | None
    bits_v: float | None
    kv_mib: float | None = None
    ppl: Estimate | None = None
    dppl_pct: Estimate | None = None  # PPL(Q)/PPL(f16) - 1, in %
    kld_mean: Estimate | None = None
    kld_p99: float | None = None
    same_top_pct: Estimate | None = None
    speed: dict[SpeedKey, Speed] = field(default_factory=dict)

    @property
    def bits_mean(self) -> float | None:
        if self.bits_k is None or self.bits_v is None:
            return None
        return (self.bits_k + self.bits_v) / 2

    @property
    def compression(self) -> float | None:
        return 16.0 / self.bits_mean if self.bits_mean else None


def latest(records: list[RunRecord]) -> list[RunRecord]:
    """The last record of each (kind, pair, depth): a rerun replaces what it reran.

    Raises TqError when the survivors come from sweeps on different models, texts or
    settings: their numbers do not compare.
    """
    chosen: dict[tuple[str, str, Any], RunRecord] = {}
    for r in records:
        chosen[(r.kind, r.pair_label, r.params.get("depth"))] = r
    for kinds, fields in ((("base", "kld"), ("ctx", "chunks")), (("bench",), ("n_prompt",
                                                                              "n_gen"))):
        setups = {(r.build_id, r.model.sha256, r.text.sha256 if r.text else None,
                   *(r.params.get(f) for f in fields))
                  for r in chosen.values() if r.kind in kinds}
        if len(setups) > 1:
            raise TqError(f"these results mix {kinds[-1]} runs of different builds, models, "
                          f"texts or {'/'.join(fields)}: table one sweep's --out directory at "
                          "a time")
    return list(chosen.values())


def _f16_ppl(records: list[RunRecord]) -> float | None:
    """PPL of the f16 cache from full-precision logits: the f16/f16 KLD run, or the base."""
    for r in records:
        if r.kind == "kld" and r.pair_label == "f16/f16" and r.perplexity is not None:
            return _quality(r, None)["ppl"].value
    for r in records:
        if r.kind == "base" and r.perplexity is not None and r.perplexity.final_ppl:
            return r.perplexity.final_ppl.value
    return None


def _quality(r: RunRecord, f16_ppl: float | None) -> dict[str, Any]:
    result = r.perplexity
    if result is None:
        return {}
    out: dict[str, Any] = {"kv_mib": result.kv_cache.total_mib}
    if result.kld is not None:
        k = result.kld
        ppl, ratio = k.ppl_q, k.ppl_ratio
        out.update(kld_mean=k.kld_mean, kld_p99=k.kld_quantiles["99.0%"],
                   same_top_pct=k.same_top_p_pct)
    elif result.kld_chunks:
        # Under 100 scored tokens there is no summary; the last chunk row is cumulative.
        last = result.kld_chunks[-1]
        value = math.exp(last.ln_ppl_ratio.value)
        ppl, ratio = last.ppl, Estimate(value, value * last.ln_ppl_ratio.error)
        out.update(kld_mean=last.kld, same_top_pct=last.same_top_p_pct)
    else:
        return out
    if f16_ppl:
        ratio = Estimate(ppl.value / f16_ppl, ratio.error)
    out.update(ppl=ppl, dppl_pct=Estimate(100 * (ratio.value - 1), 100 * ratio.error))
    return out


def summarize(records: list[RunRecord], baseline: CachePair | None) -> list[PairRow]:
    """One row per K/V pair, in the order the pairs first ran."""
    records = latest(records)
    f16_ppl = _f16_ppl(records)
    records = [r for r in records if r.kind != "base"]
    pairs = list(dict.fromkeys(CachePair(r.type_k, r.type_v) for r in records))
    if baseline is not None and baseline not in pairs:
        have = ", ".join(p.label for p in pairs) or "none"
        raise TqError(f"no {baseline.label} runs in these results (pairs: {have}): pass "
                      "--baseline K/V with one of them")
    speeds: dict[CachePair, dict[SpeedKey, tuple[float, float]]] = {p: {} for p in pairs}
    for r in records:
        for row in r.bench:
            speeds[CachePair(r.type_k, r.type_v)][(row.test, row.n_depth)] = (row.avg_ts,
                                                                             row.stddev_ts)
    base_speed = speeds.get(baseline, {}) if baseline else {}
    rows = []
    for pair in pairs:
        quality: dict[str, Any] = {}
        for r in records:
            if r.kind == "kld" and CachePair(r.type_k, r.type_v) == pair:
                quality = _quality(r, f16_ppl)
        speed = {}
        for key, (avg, std) in sorted(speeds[pair].items(), key=lambda kv: (kv[0][1], kv[0][0])):
            ref = base_speed.get(key)
            speed[key] = Speed(avg, std, avg / ref[0] if ref and ref[0] > 0 else None)
        rows.append(PairRow(
            pair,
            CACHE_TYPES[pair.k].bits_per_value if pair.k in CACHE_TYPES else None,
            CACHE_TYPES[pair.v].bits_per_value if pair.v in CACHE_TYPES else None,
            speed=speed, **quality))
    return rows


def _speed_columns(rows: list[PairRow]) -> list[SpeedKey]:
    keys = {k for row in rows for k in row.speed}
    return sorted(keys, key=lambda k: (k[1], not k[0].startswith("pp"), k[0]))


def _speed_name(key: SpeedKey) -> str:
    test, depth = key
    return f"{test} @ d{depth}" if depth else test


def _num(x: float | None) -> float | None:
    """JSON-safe and free of float noise: nan becomes null, six decimals are kept."""
    return None if x is None or math.isnan(x) else round(x, 6)


def _flat(row: PairRow, speed_keys: list[SpeedKey]) -> dict[str, Any]:
    """The row as plain named numbers (csv and json)."""
    def est(name: str, e: Estimate | None) -> dict[str, Any]:
        return {name: _num(e.value) if e else None, f"{name}_err": _num(e.error) if e else None}

    out: dict[str, Any] = {
        "pair": row.pair.label, "type_k": row.pair.k, "type_v": row.pair.v,
        "bits_k": row.bits_k, "bits_v": row.bits_v, "bits_mean": row.bits_mean,
        "compression_vs_f16": _num(row.compression), "kv_mib": row.kv_mib,
        **est("ppl", row.ppl), **est("dppl_pct", row.dppl_pct), **est("kld_mean", row.kld_mean),
        "kld_p99": row.kld_p99, **est("same_top_pct", row.same_top_pct),
    }
    for key in speed_keys:
        s = row.speed.get(key)
        name = f"{key[0]}_d{key[1]}"
        out[f"{name}_ts"] = s.avg_ts if s else None
        out[f"{name}_ts_err"] = s.stddev_ts if s else None
        out[f"{name}_ratio"] = _num(s.ratio) if s else None
    return out


def _fmt(value: float | None, spec: str) -> str:
    # + 0.0 turns the "-0.000000" llama.cpp prints for a rounded-off tiny value into 0
    return "–" if value is None else format(value + 0.0, spec)


def _markdown(rows: list[PairRow], speed_keys: list[SpeedKey], baseline: CachePair | None) -> str:
    header = ["K/V", "bits K/V", "bits", "vs f16", "KV MiB", "PPL", "ΔPPL %", "mean KLD",
              "99% KLD", "same top %", *(f"{_speed_name(k)} t/s" for k in speed_keys)]
    right = [False] + [True] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    for row in rows:
        def pm(e: Estimate | None, spec: str, sign: str = "") -> str:
            if e is None:
                return "–"
            # f16 against its own base prints "± nan": there is no spread to show
            error = "" if math.isnan(e.error) else f" ± {e.error:{spec}}"
            return f"{e.value:{sign}{spec}}{error}"

        bits_kv = f"{_fmt(row.bits_k, 'g')}/{_fmt(row.bits_v, 'g')}"
        cells = [row.pair.label, bits_kv, _fmt(row.bits_mean, ".2f"),
                 _fmt(row.compression, ".2f") + ("x" if row.compression else ""),
                 _fmt(row.kv_mib, ".2f"), pm(row.ppl, ".4f"), pm(row.dppl_pct, ".2f", "+"),
                 _fmt(row.kld_mean.value if row.kld_mean else None, ".6f"),
                 _fmt(row.kld_p99, ".6f"),
                 _fmt(row.same_top_pct.value if row.same_top_pct else None, ".2f")]
        for key in speed_keys:
            s = row.speed.get(key)
            if s is None:
                cells.append("–")
            else:
                ratio = f" ({s.ratio:.2f}x)" if s.ratio is not None else ""
                cells.append(f"{s.avg_ts:.1f}{ratio}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "bits: per value, K/V and mean; KV MiB: as llama-perplexity reports it; "
             "PPL, KLD, same top token: against the f16 cache."]
    if speed_keys:
        ratio = f", in brackets the ratio to {baseline.label}" if baseline else ""
        notes.append(f"t/s: llama-bench tokens/s at KV depth d{ratio}.")
    return "\n".join(lines + notes) + "\n"


def render(records: list[RunRecord], fmt: str = "md",
           baseline: CachePair | None = DEFAULT_BASELINE) -> str:
    if fmt not in FORMATS:
        raise TqError(f"unknown table format {fmt!r}: use one of {', '.join(FORMATS)}")
    rows = summarize(records, baseline)
    if not rows:
        raise TqError("these results hold no finished runs: run `tqllama bench sweep` first")
    speed_keys = _speed_columns(rows)
    if fmt == "md":
        return _markdown(rows, speed_keys, baseline)
    flat = [_flat(row, speed_keys) for row in rows]
    if fmt == "json":
        return json.dumps(flat, indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(flat[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()
