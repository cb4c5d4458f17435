"""Parse a llama-perplexity log (stdout and stderr in one file) into numbers.

Two kinds of run are read:
- a plain / `--kl-divergence-base` run: per-chunk `[i]PPL,` and `Final estimate: PPL = X +/- Y`;
- a `--kl-divergence` run: per-chunk table rows and, when at least 100 tokens were scored,
  the summary (perplexity, KL divergence and token-probability statistics).
Either also carries the `llama_kv_cache: size = ...` line. Anything missing that the run
should have printed raises ParseError: a cut-off log never yields a number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tqllama.bench.logtext import NUMBER, PLUS_MINUS, ParseError, complete_text, search_line

# llama-perplexity skips the KLD summary below this many scored tokens (perplexity.cpp).
MIN_TOKENS_FOR_SUMMARY = 100

_PM = rf"\s*{PLUS_MINUS}\s*"

# Percentile rows of the two distributions, in the order llama-perplexity prints them.
KLD_LEVELS = ("Maximum", "99.9%", "99.0%", "95.0%", "90.0%", "Median",
              "10.0%", "5.0%", "1.0%", "0.1%", "Minimum")
DELTA_P_LEVELS = ("Maximum", "99.9%", "99.0%", "95.0%", "90.0%", "75.0%", "Median",
                  "25.0%", "10.0%", "5.0%", "1.0%", "0.1%", "Minimum")


@dataclass(frozen=True)
class Estimate:
    """A value with its standard error, as printed `X ± Y`."""

    value: float
    error: float


@dataclass(frozen=True)
class KvCacheSize:
    """`llama_kv_cache: size = ... MiB (... cells, ... layers, ...), K (t): ... MiB, V (t): ...`.

    With boundary layers (tqllama's builds) each side lists every type's share, the cache's
    own type first: `K (turbo2):    0.74 MiB + K (q8_0):    0.40 MiB`. type_k / type_v are
    the first type, k_mib / v_mib the sum, k_parts / v_parts every (type, MiB).
    """

    total_mib: float
    cells: int
    layers: int
    type_k: str
    k_mib: float
    type_v: str
    v_mib: float
    k_parts: tuple[tuple[str, float], ...] = ()
    v_parts: tuple[tuple[str, float], ...] = ()
    streams: int = 1  # `N/S seqs`: S streams of `cells` cells each (llama-perplexity: -b / -c)


@dataclass(frozen=True)
class KldChunk:
    """One row of the per-chunk table of a `--kl-divergence` run (percent columns in %)."""

    chunk: int
    ppl: Estimate
    ln_ppl_ratio: Estimate
    kld: Estimate
    delta_p_rms_pct: Estimate
    same_top_p_pct: Estimate


@dataclass(frozen=True)
class KldSummary:
    """The summary a `--kl-divergence` run prints at the end (percentages in %)."""

    ppl_q: Estimate
    ppl_base: Estimate
    cor_ln_ppl_pct: float
    ln_ppl_ratio: Estimate
    ppl_ratio: Estimate
    ppl_diff: Estimate
    kld_mean: Estimate
    kld_quantiles: dict[str, float]
    delta_p_mean_pct: Estimate
    delta_p_quantiles_pct: dict[str, float]
    delta_p_rms_pct: Estimate
    same_top_p_pct: Estimate


@dataclass(frozen=True)
class PerplexityResult:
    n_chunks: int
    n_ctx: int
    kv_cache: KvCacheSize
    chunk_ppl: tuple[float, ...]
    final_ppl: Estimate | None  # plain and base runs
    kld_chunks: tuple[KldChunk, ...]  # --kl-divergence runs
    kld: KldSummary | None  # --kl-divergence runs scoring >= MIN_TOKENS_FOR_SUMMARY tokens

    @property
    def scored_tokens(self) -> int:
        # Each chunk scores its second half minus one token (perplexity.cpp, `first`).
        return self.n_chunks * (self.n_ctx - 1 - self.n_ctx // 2)


def _estimate(label: str, text: str, pct: bool = False) -> Estimate:
    """`label : X ± Y` (with a trailing `%` when `pct`); any run of spaces in `label` matches."""
    pattern = re.escape(label).replace(r"\ ", r"\s+")
    suffix = r"\s*%" if pct else ""
    m = search_line(rf"{pattern}\s*:\s*({NUMBER}){_PM}({NUMBER}){suffix}", text, f"`{label}` line")
    return Estimate(float(m.group(1)), float(m.group(2)))


def _kv_side(side: str) -> str:
    """One side of the KV line: `K (t): x MiB`, then ` + K (t): y MiB` per further type."""
    part = rf"{side} \(\w+\):\s*{NUMBER} MiB"
    return rf"({part}(?: \+ {part})*)"


def _kv_parts(side: str, text: str) -> tuple[tuple[str, float], ...]:
    return tuple((t, float(mib)) for t, mib in
                 re.findall(rf"{side} \((\w+)\):\s*({NUMBER}) MiB", text))


def parse_kv_cache(text: str) -> KvCacheSize:
    m = search_line(
        rf"llama_kv_cache: size =\s*({NUMBER}) MiB \(\s*(\d+) cells,\s*(\d+) layers,"
        rf"\s*\d+/(\d+) seqs\), {_kv_side('K')}, {_kv_side('V')}",
        text,
        "`llama_kv_cache: size = ...` line",
    )
    k_parts, v_parts = _kv_parts("K", m.group(5)), _kv_parts("V", m.group(6))
    return KvCacheSize(
        total_mib=float(m.group(1)),
        cells=int(m.group(2)),
        layers=int(m.group(3)),
        type_k=k_parts[0][0],
        k_mib=round(sum(mib for _, mib in k_parts), 2),
        type_v=v_parts[0][0],
        v_mib=round(sum(mib for _, mib in v_parts), 2),
        k_parts=k_parts,
        v_parts=v_parts,
        streams=int(m.group(4)),
    )


def _chunk_ppl(text: str, n_chunks: int) -> tuple[float, ...]:
    values: dict[int, float] = {}
    for m in re.finditer(rf"\[(\d+)\]({NUMBER}),", text):
        values[int(m.group(1))] = float(m.group(2))
    if sorted(values) != list(range(1, n_chunks + 1)):
        raise ParseError(
            f"llama-perplexity printed {len(values)} of {n_chunks} chunk perplexities: "
            "the run was cut short or crashed; rerun it"
        )
    return tuple(values[i] for i in range(1, n_chunks + 1))


def _kld_chunks(text: str, n_chunks: int) -> tuple[KldChunk, ...]:
    row = re.compile(
        rf"^\s*(\d+)\s+({NUMBER}){_PM}({NUMBER})\s+({NUMBER}){_PM}({NUMBER})"
        rf"\s+({NUMBER}){_PM}({NUMBER})\s+({NUMBER}){_PM}({NUMBER})\s*%"
        rf"\s+({NUMBER}){_PM}({NUMBER})\s*%\s*$",
        re.MULTILINE,
    )
    rows: dict[int, KldChunk] = {}
    for m in row.finditer(text):
        g = [float(x) for x in m.groups()[1:]]
        chunk = int(m.group(1))
        rows[chunk] = KldChunk(
            chunk,
            Estimate(g[0], g[1]),
            Estimate(g[2], g[3]),
            Estimate(g[4], g[5]),
            Estimate(g[6], g[7]),
            Estimate(g[8], g[9]),
        )
    if sorted(rows) != list(range(1, n_chunks + 1)):
        raise ParseError(
            f"llama-perplexity printed {len(rows)} of {n_chunks} KL-divergence chunk rows: "
            "the run was cut short or crashed; rerun it"
        )
    return tuple(rows[i] for i in range(1, n_chunks + 1))


def _quantiles(levels: tuple[str, ...], unit: str, pct: bool, text: str) -> dict[str, float]:
    out = {}
    for level in levels:
        # `(?:^|\s)` keeps " 5.0%" from matching inside "95.0%".
        label = rf"(?:^|\s){re.escape(level)}\s*{unit}"
        suffix = r"\s*%" if pct else ""
        m = search_line(rf"{label}\s*:\s*({NUMBER}){suffix}", text, f"`{level} {unit}` line")
        out[level] = float(m.group(1))
    return out


def _kld_summary(text: str) -> KldSummary:
    # The sections follow each other; reading each from its header on keeps the
    # "Mean PPL" labels etc. from matching anything printed earlier in the log.
    start = search_line(r"====== Perplexity statistics ======", text, "KLD summary").start()
    text = text[start:]
    cor = search_line(rf"Cor\(ln\(PPL\(Q\)\), ln\(PPL\(base\)\)\)\s*:\s*({NUMBER})%", text,
                      "`Cor(ln(PPL(Q)), ln(PPL(base)))` line")
    return KldSummary(
        ppl_q=_estimate("Mean PPL(Q)", text),
        ppl_base=_estimate("Mean PPL(base)", text),
        cor_ln_ppl_pct=float(cor.group(1)),
        ln_ppl_ratio=_estimate("Mean ln(PPL(Q)/PPL(base))", text),
        ppl_ratio=_estimate("Mean PPL(Q)/PPL(base)", text),
        ppl_diff=_estimate("Mean PPL(Q)-PPL(base)", text),
        kld_mean=_estimate("Mean KLD", text),
        kld_quantiles=_quantiles(KLD_LEVELS, "KLD", False, text),
        delta_p_mean_pct=_estimate("Mean Δp", text, pct=True),
        delta_p_quantiles_pct=_quantiles(DELTA_P_LEVELS, "Δp", True, text),
        delta_p_rms_pct=_estimate("RMS Δp", text, pct=True),
        same_top_p_pct=_estimate("Same top p", text, pct=True),
    )


def parse_perplexity(text: str) -> PerplexityResult:
    """Numbers of one llama-perplexity log; ParseError when the log is incomplete."""
    text = complete_text(text)
    kv_cache = parse_kv_cache(text)
    kld_run = re.search(r"kl_divergence: computing over", text) is not None
    header = (
        r"kl_divergence: computing over (\d+) chunks, n_ctx=(\d+)"
        if kld_run
        else r"perplexity: calculating perplexity over (\d+) chunks, n_ctx=(\d+)"
    )
    m = re.search(header, text)
    if m is None:
        raise ParseError(
            "llama-perplexity never started computing (no `calculating perplexity over N "
            "chunks` line): see the log for why"
        )
    n_chunks, n_ctx = int(m.group(1)), int(m.group(2))
    if not kld_run:
        final = search_line(
            rf"Final estimate: PPL = ({NUMBER}){_PM}({NUMBER})", text, "`Final estimate` line"
        )
        return PerplexityResult(
            n_chunks=n_chunks,
            n_ctx=n_ctx,
            kv_cache=kv_cache,
            chunk_ppl=_chunk_ppl(text, n_chunks),
            final_ppl=Estimate(float(final.group(1)), float(final.group(2))),
            kld_chunks=(),
            kld=None,
        )
    result = PerplexityResult(
        n_chunks=n_chunks,
        n_ctx=n_ctx,
        kv_cache=kv_cache,
        chunk_ppl=(),
        final_ppl=None,
        kld_chunks=_kld_chunks(text, n_chunks),
        kld=None,
    )
    if result.scored_tokens < MIN_TOKENS_FOR_SUMMARY:
        return result
    return PerplexityResult(**{**result.__dict__, "kld": _kld_summary(text)})
