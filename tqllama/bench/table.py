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

from tqllama.bench.parse_perplexity import Estimate, KvCacheSize
from tqllama.bench.store import RunRecord
from tqllama.cachepair import CachePair
from tqllama.errors import TqError
from tqllama.types import CACHE_TYPES

FORMATS = ("md", "csv", "json")
DEFAULT_BASELINE = CachePair("q8_0", "q8_0")

SpeedKey = tuple[str, int]  # (llama-bench test name, KV depth)

# Boundary layers are judged by the share of the quality gap to the next type up that they
# close: turbo2/turbo2@b2 against turbo2/turbo2 (N = 0) and turbo3/turbo3.
_LADDER = ("turbo2", "turbo3", "turbo4", "q8_0")


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
    passkey: dict[str, Any] | None = None  # retrieval.summary of the pair's passkey run

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


def _bits(name: str) -> float | None:
    return CACHE_TYPES[name].bits_per_value if name in CACHE_TYPES else None


def layer_mix_bits(pair: CachePair, n_layer: int | None) -> tuple[float | None, float | None]:
    """Bits per value of K and V, averaged over the layers: boundary layers have their own types.

    n_layer: the layers holding a KV cache (llama.cpp's KV size line); needed only with
    boundary layers. Every layer is assumed to cache as many values as any other, which
    holds for models without sliding-window or differently sized layers.
    """
    if not pair.boundary:
        return _bits(pair.k), _bits(pair.v)
    if not n_layer:
        return None, None
    n_edge = min(2 * pair.boundary, n_layer)

    def mix(main: str, edge: str) -> float | None:
        b_main, b_edge = _bits(main), _bits(edge)
        if b_main is None or b_edge is None:
            return None
        return (n_edge * b_edge + (n_layer - n_edge) * b_main) / n_layer

    return mix(pair.k, pair.k_boundary), mix(pair.v, pair.v_boundary)


def cached_bits(kv: KvCacheSize) -> tuple[float | None, float | None]:
    """Bits per value of K and V as the cache holds them, from each type's share of the KV
    size line: exact for boundary layers, cache policies and llama.cpp's automatic one
    alike (to the line's two decimals)."""
    def side(parts: tuple[tuple[str, float], ...]) -> float | None:
        bits = [(_bits(t), mib) for t, mib in parts]
        if not bits or any(b is None for b, _ in bits):
            return None
        return sum(mib for _, mib in bits) / sum(mib / b for b, mib in bits if b)

    return side(kv.k_parts), side(kv.v_parts)


def _n_layer(records: list[RunRecord]) -> int | None:
    """The KV-cache layers of the sweep's model, from any llama-perplexity run (all share it)."""
    for r in records:
        if r.perplexity is not None:
            return r.perplexity.kv_cache.layers
    return None


def summarize(records: list[RunRecord], baseline: CachePair | None) -> list[PairRow]:
    """One row per K/V pair, in the order the pairs first ran."""
    records = latest(records)
    f16_ppl = _f16_ppl(records)
    n_layer = _n_layer(records)
    records = [r for r in records if r.kind != "base"]
    pairs = list(dict.fromkeys(r.pair for r in records))
    if baseline is not None and baseline not in pairs:
        have = ", ".join(p.label for p in pairs) or "none"
        raise TqError(f"no {baseline.label} runs in these results (pairs: {have}): pass "
                      "--baseline K/V with one of them")
    speeds: dict[CachePair, dict[SpeedKey, tuple[float, float]]] = {p: {} for p in pairs}
    for r in records:
        for row in r.bench:
            speeds[r.pair][(row.test, row.n_depth)] = (row.avg_ts, row.stddev_ts)
    base_speed = speeds.get(baseline, {}) if baseline else {}
    rows = []
    for pair in pairs:
        quality: dict[str, Any] = {}
        bits = layer_mix_bits(pair, n_layer)
        for r in records:
            if r.kind == "kld" and r.pair == pair:
                quality = _quality(r, f16_ppl)
                assert r.perplexity is not None
                measured = cached_bits(r.perplexity.kv_cache)
                bits = (measured[0] or bits[0], measured[1] or bits[1])
            if r.kind == "passkey" and r.pair == pair:
                quality["passkey"] = r.passkey
        speed = {}
        for key, (avg, std) in sorted(speeds[pair].items(), key=lambda kv: (kv[0][1], kv[0][0])):
            ref = base_speed.get(key)
            speed[key] = Speed(avg, std, avg / ref[0] if ref and ref[0] > 0 else None)
        rows.append(PairRow(pair, *bits, speed=speed, **quality))
    return rows


@dataclass(frozen=True)
class BoundaryGain:
    """How much of the KLD gap between a pair and the next type up its boundary layers close."""

    row: PairRow
    plain: PairRow  # the same pair without boundary layers
    reference: PairRow  # the next type up on both sides that are turbo: turbo2 -> turbo3
    recovered: float  # (KLD(plain) - KLD(row)) / (KLD(plain) - KLD(reference)), 1 = all of it


def gap_reference(pair: CachePair) -> CachePair | None:
    """The pair one step up the ladder turbo2 < turbo3 < turbo4 < q8_0 on each turbo side."""
    def up(name: str) -> str:
        i = _LADDER.index(name) if name in _LADDER else -1
        return _LADDER[i + 1] if 0 <= i < len(_LADDER) - 1 else name

    ref = CachePair(up(pair.k), up(pair.v))
    return None if ref == pair.plain else ref


def boundary_gains(rows: list[PairRow]) -> list[BoundaryGain]:
    """One entry per boundary-layer row whose plain pair and gap reference have KLD too."""
    by_pair = {row.pair: row for row in rows if row.kld_mean is not None}
    out = []
    for row in rows:
        ref = gap_reference(row.pair)
        plain, top = by_pair.get(row.pair.plain), by_pair.get(ref) if ref else None
        if not row.pair.boundary or row.kld_mean is None or plain is None or top is None:
            continue
        assert plain.kld_mean is not None and top.kld_mean is not None
        gap = plain.kld_mean.value - top.kld_mean.value
        if gap <= 0:  # the reference is no better: there is no gap to recover
            continue
        out.append(BoundaryGain(row, plain, top, (plain.kld_mean.value - row.kld_mean.value) / gap))
    return out


def _speed_columns(rows: list[PairRow]) -> list[SpeedKey]:
    keys = {k for row in rows for k in row.speed}
    return sorted(keys, key=lambda k: (k[1], not k[0].startswith("pp"), k[0]))


def _speed_name(key: SpeedKey) -> str:
    test, depth = key
    return f"{test} @ d{depth}" if depth else test


def _num(x: float | None) -> float | None:
    """JSON-safe and free of float noise: nan becomes null, six decimals are kept."""
    return None if x is None or math.isnan(x) else round(x, 6)


def _flat(row: PairRow, speed_keys: list[SpeedKey], gain: BoundaryGain | None) -> dict[str, Any]:
    """The row as plain named numbers (csv and json)."""
    def est(name: str, e: Estimate | None) -> dict[str, Any]:
        return {name: _num(e.value) if e else None, f"{name}_err": _num(e.error) if e else None}

    out: dict[str, Any] = {
        "pair": row.pair.label, "type_k": row.pair.k, "type_v": row.pair.v,
        "boundary": row.pair.boundary,
        "type_k_boundary": row.pair.k_boundary if row.pair.boundary else None,
        "type_v_boundary": row.pair.v_boundary if row.pair.boundary else None,
        "bits_k": _num(row.bits_k), "bits_v": _num(row.bits_v), "bits_mean": _num(row.bits_mean),
        "compression_vs_f16": _num(row.compression), "kv_mib": row.kv_mib,
        **est("ppl", row.ppl), **est("dppl_pct", row.dppl_pct), **est("kld_mean", row.kld_mean),
        "kld_p99": row.kld_p99, **est("same_top_pct", row.same_top_pct),
        "gap_recovered": _num(gain.recovered) if gain else None,
    }
    if row.passkey is not None:
        out["passkey_found"], out["passkey_tried"] = row.passkey["found"], row.passkey["tried"]
        for length, (found, tried) in row.passkey["by_length"].items():
            out[f"passkey_{length}"] = f"{found}/{tried}"
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
    lengths = sorted({int(n) for row in rows if row.passkey for n in row.passkey["by_length"]})
    header = ["K/V", "bits K/V", "bits", "vs f16", "KV MiB", "PPL", "ΔPPL %", "mean KLD",
              "99% KLD", "same top %", *(f"passkey {n}" for n in lengths),
              *(f"{_speed_name(k)} t/s" for k in speed_keys)]
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

        bits_kv = f"{_fmt(row.bits_k, '.3g')}/{_fmt(row.bits_v, '.3g')}"
        cells = [row.pair.label, bits_kv, _fmt(row.bits_mean, ".2f"),
                 _fmt(row.compression, ".2f") + ("x" if row.compression else ""),
                 _fmt(row.kv_mib, ".2f"), pm(row.ppl, ".4f"), pm(row.dppl_pct, ".2f", "+"),
                 _fmt(row.kld_mean.value if row.kld_mean else None, ".6f"),
                 _fmt(row.kld_p99, ".6f"),
                 _fmt(row.same_top_pct.value if row.same_top_pct else None, ".2f")]
        for n in lengths:
            found_tried = row.passkey["by_length"].get(str(n)) if row.passkey else None
            # results stored before the margins have none
            margin = row.passkey.get("min_margin", {}).get(str(n)) if row.passkey else None
            cell = f"{found_tried[0]}/{found_tried[1]}" if found_tried else "–"
            cells.append(cell if margin is None else f"{cell} ({margin:+.2f})")
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
    if lengths:
        notes.append("passkey N: keys found / asked for in contexts of N tokens (greedy answer, "
                     "exact match; llama-server with this cache); in brackets the smallest "
                     "margin: the key's first token's log-probability over the likeliest other "
                     "token's (< 0: that key was lost).")
    if speed_keys:
        ratio = f", in brackets the ratio to {baseline.label}" if baseline else ""
        notes.append(f"t/s: llama-bench tokens/s at KV depth d{ratio}.")
    if any(row.pair.boundary for row in rows):
        notes.append("K/V@bN: the first N and the last N layers keep their cache in q8_0 (or the "
                     "types after the colon); bits are the mean over all layers.")
    return "\n".join(lines + notes + _boundary_markdown(boundary_gains(rows))) + "\n"


def _boundary_markdown(gains: list[BoundaryGain]) -> list[str]:
    if not gains:
        return []
    kld = "mean KLD"
    lines = ["", f"Boundary layers: the share of the {kld} gap between the pair without them "
             "and the pair one type up that they recover, (KLD(N=0) - KLD(N)) / "
             "(KLD(N=0) - KLD(reference)).", "",
             f"| K/V | N | bits | {kld} | {kld} N=0 | reference | {kld} reference | "
             "gap recovered |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    for g in gains:
        assert g.row.kld_mean and g.plain.kld_mean and g.reference.kld_mean
        lines.append(" | ".join([
            f"| {g.row.pair.label}", str(g.row.pair.boundary), _fmt(g.row.bits_mean, ".2f"),
            f"{g.row.kld_mean.value:.6f}", f"{g.plain.kld_mean.value:.6f}",
            g.reference.pair.label, f"{g.reference.kld_mean.value:.6f}",
            f"{100 * g.recovered:.1f}% |"]))
    return lines


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
    gains = {g.row.pair: g for g in boundary_gains(rows)}
    flat = [_flat(row, speed_keys, gains.get(row.pair)) for row in rows]
    if fmt == "json":
        return json.dumps(flat, indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(flat[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()
