"""Every fixture (a real llama.cpp log, command in its .cmd sidecar) parses to the numbers
in its text; every copy cut short before its last needed line raises ParseError."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tqllama.bench.logtext import ParseError
from tqllama.bench.parse_bench import BenchRow, parse_bench
from tqllama.bench.parse_perplexity import Estimate, parse_perplexity
from tqllama.errors import TqError

FIXTURES = Path(__file__).parent / "fixtures" / "bench"


def text(name: str) -> str:
    return (FIXTURES / f"{name}.log").read_text(encoding="utf-8")


def test_every_fixture_has_its_command():
    logs = sorted(FIXTURES.glob("*.log"))
    assert logs
    for log in logs:
        cmd = log.with_suffix(".cmd").read_text()
        assert re.match(r"\S*llama-(perplexity|bench) ", cmd), log.name
        assert log.stat().st_size < 60_000, f"{log.name}: keep fixtures small"


# --------------------------------------------------------------- llama-perplexity


def test_base_run_four_chunks():
    r = parse_perplexity(text("upstream-ppl-f16-c128x4"))
    assert (r.n_chunks, r.n_ctx) == (4, 128)
    assert r.chunk_ppl == (9.3781, 23.4839, 32.7937, 33.1128)
    assert r.final_ppl == Estimate(33.1128, 7.47930)
    kv = r.kv_cache
    assert (kv.total_mib, kv.cells, kv.layers) == (90.00, 256, 30)
    assert (kv.type_k, kv.k_mib, kv.type_v, kv.v_mib) == ("f16", 45.00, "f16", 45.00)
    assert r.kld is None and r.kld_chunks == ()


def test_base_run_one_chunk():
    r = parse_perplexity(text("upstream-ppl-f16-c128x1"))
    assert r.chunk_ppl == (9.3781,)
    assert r.final_ppl == Estimate(9.3781, 3.00547)


def test_kld_run_q8_0():
    r = parse_perplexity(text("upstream-kld-q8_0-q8_0-c128x4"))
    assert (r.n_chunks, r.n_ctx, r.scored_tokens) == (4, 128, 252)
    assert (r.kv_cache.type_k, r.kv_cache.k_mib, r.kv_cache.total_mib) == ("q8_0", 23.91, 47.81)
    assert r.final_ppl is None and r.chunk_ppl == ()
    first, last = r.kld_chunks[0], r.kld_chunks[-1]
    assert first.chunk == 1 and first.ppl == Estimate(9.4449, 3.0436)
    assert first.kld == Estimate(0.00284, 0.00034)
    assert r.kld_chunks[2].ln_ppl_ratio == Estimate(-0.00414, 0.00887)
    assert last.delta_p_rms_pct == Estimate(1.457, 0.156)
    assert last.same_top_p_pct == Estimate(95.635, 1.290)
    k = r.kld
    assert k is not None
    assert k.ppl_q == Estimate(33.048770, 7.459192)
    assert k.ppl_base == Estimate(32.963510, 7.410500)
    assert k.cor_ln_ppl_pct == 99.94
    assert k.ln_ppl_ratio == Estimate(0.002583, 0.007737)
    assert k.ppl_ratio == Estimate(1.002587, 0.007757)
    assert k.ppl_diff == Estimate(0.085260, 0.258300)
    assert k.kld_mean == Estimate(0.004411, 0.000317)
    assert k.kld_quantiles["Maximum"] == 0.049084
    assert k.kld_quantiles["99.0%"] == 0.020277
    assert k.kld_quantiles["Median"] == 0.003020
    assert k.kld_quantiles["Minimum"] == 0.0  # printed "-0.000000"
    assert k.delta_p_mean_pct == Estimate(-0.108, 0.092)
    assert k.delta_p_quantiles_pct["Maximum"] == 6.884
    assert k.delta_p_quantiles_pct["Minimum"] == -7.614
    assert k.delta_p_rms_pct == Estimate(1.457, 0.156)
    assert k.same_top_p_pct == Estimate(95.635, 1.290)


def test_kld_run_q4_0():
    r = parse_perplexity(text("upstream-kld-q4_0-q4_0-c128x4"))
    assert (r.kv_cache.type_v, r.kv_cache.v_mib, r.kv_cache.total_mib) == ("q4_0", 12.66, 25.31)
    k = r.kld
    assert k is not None
    assert k.ppl_q == Estimate(35.050502, 7.860275)
    assert k.ppl_ratio == Estimate(1.063312, 0.029600)
    assert k.cor_ln_ppl_pct == 99.23
    assert k.kld_mean == Estimate(0.063507, 0.021749)
    assert k.kld_quantiles["99.9%"] == 4.222958
    assert k.kld_quantiles["99.0%"] == 0.449269
    assert k.kld_quantiles["5.0%"] == 0.000863  # not confused with "95.0%"
    assert k.kld_quantiles["95.0%"] == 0.147555
    assert k.delta_p_quantiles_pct["1.0%"] == -21.723
    assert k.same_top_p_pct == Estimate(88.492, 2.014)
    assert r.kld_chunks[1].kld == Estimate(0.07479, 0.04280)


def test_kld_run_under_100_tokens_has_rows_but_no_summary():
    r = parse_perplexity(text("upstream-kld-q4_0-q4_0-c128x1"))
    assert r.scored_tokens == 63 and r.kld is None
    (row,) = r.kld_chunks
    assert row.ppl == Estimate(10.0621, 3.2114)
    assert row.kld == Estimate(0.03053, 0.00626)
    assert row.same_top_p_pct == Estimate(96.825, 2.227)


def test_kld_run_turbo3():
    r = parse_perplexity(text("turbo-kld-turbo3-turbo3-c128x4"))
    kv = r.kv_cache
    assert (kv.type_k, kv.k_mib, kv.type_v, kv.v_mib, kv.total_mib) == (
        "turbo3", 9.14, "turbo3", 9.14, 18.28)
    assert r.kld_chunks[0].ln_ppl_ratio == Estimate(0.18310, 0.04982)
    k = r.kld
    assert k is not None
    assert k.ppl_q == Estimate(36.492173, 8.110248)
    assert k.ppl_ratio == Estimate(1.107048, 0.049266)
    assert k.cor_ln_ppl_pct == 98.02
    assert k.kld_mean == Estimate(0.153495, 0.012642)
    assert (k.kld_quantiles["Maximum"], k.kld_quantiles["99.0%"],
            k.kld_quantiles["Median"]) == (1.448263, 1.166131, 0.089572)
    assert k.delta_p_rms_pct == Estimate(9.720, 1.204)
    assert k.same_top_p_pct == Estimate(82.937, 2.374)


def test_kld_run_mixed_turbo_pair():
    r = parse_perplexity(text("turbo-kld-turbo4-turbo3-c128x4"))
    kv = r.kv_cache
    assert (kv.type_k, kv.k_mib, kv.type_v, kv.v_mib) == ("turbo4", 11.95, "turbo3", 9.14)
    assert r.kld is not None and r.kld.kld_mean == Estimate(0.054379, 0.005654)
    assert r.kld.kld_quantiles["99.0%"] == 0.430095
    assert r.kld.ppl_ratio == Estimate(1.011284, 0.026614)
    assert r.kld.same_top_p_pct == Estimate(86.508, 2.156)
    short = parse_perplexity(text("turbo-kld-turbo4-turbo3-c128x1"))
    assert short.kld is None
    assert short.kld_chunks[0].kld == Estimate(0.03785, 0.00572)


def _strip_prefixes(log: str) -> str:
    return re.sub(r"^\d+\.\d+\.\d+\.\d+ [IWE] ", "", log, flags=re.MULTILINE)


def test_prefixes_plus_minus_and_line_endings_do_not_change_numbers():
    log = text("upstream-kld-q4_0-q4_0-c128x4")
    want = parse_perplexity(log)
    assert _strip_prefixes(log) != log
    variants = [_strip_prefixes(log), log.replace("±", "+/-"), log.replace("\n", "\r\n")]
    for variant in variants:
        assert parse_perplexity(variant) == want


def test_interleaved_stdout_and_stderr():
    # The per-chunk values (stdout) may land around stderr lines when the streams are
    # captured through separate buffers.
    log = text("upstream-ppl-f16-c128x4")
    moved = log.replace("[3]32.7937,", "[3]32.7937,\n0.21.0 I llama_perf: interleaved\n")
    assert parse_perplexity(moved).chunk_ppl == (9.3781, 23.4839, 32.7937, 33.1128)


def test_nonsense_and_foreign_text():
    for bogus in ("", "hello\n", text("upstream-bench-q4_0-q4_0-md")):
        with pytest.raises(ParseError):
            parse_perplexity(bogus)
    assert issubclass(ParseError, TqError)


# --------------------------------------------------------------- llama-bench

Q4 = ("q4_0", "q4_0")


def _tests(rows: list[BenchRow]) -> list[tuple[str, int, float]]:
    return [(r.test, r.n_depth, r.avg_ts) for r in rows]


def test_bench_json():
    rows = parse_bench(text("upstream-bench-q4_0-q4_0-json"), "json")
    assert all((r.type_k, r.type_v) == Q4 for r in rows)
    assert _tests(rows) == [("pp64", 0, 9.822015), ("tg16", 0, 2.455487),
                            ("pp64", 256, 16.70601), ("tg16", 256, 3.09976)]
    assert rows[0].stddev_ts == 0.0


def test_bench_jsonl():
    rows = parse_bench(text("upstream-bench-q4_0-q4_0-jsonl"), "jsonl", expected_rows=4)
    assert _tests(rows) == [("pp64", 0, 9.638661), ("tg16", 0, 0.681512),
                            ("pp64", 256, 12.800496), ("tg16", 256, 4.256489)]


def test_bench_csv():
    rows = parse_bench(text("upstream-bench-q4_0-q4_0-csv"), "csv", expected_rows=4)
    assert all((r.type_k, r.type_v) == Q4 for r in rows)
    assert _tests(rows) == [("pp64", 0, 8.98026), ("tg16", 0, 4.530152),
                            ("pp64", 256, 6.071625), ("tg16", 256, 1.992203)]


def test_bench_md():
    rows = parse_bench(text("upstream-bench-q4_0-q4_0-md"), "md")
    assert all((r.type_k, r.type_v) == Q4 for r in rows)
    assert _tests(rows) == [("pp64", 0, 11.98), ("tg16", 0, 3.97),
                            ("pp64", 256, 7.16), ("tg16", 256, 1.74)]


def test_bench_md_with_default_types_hidden():
    rows = parse_bench(text("upstream-bench-f16-f16-md"), "md")
    assert all((r.type_k, r.type_v) == ("f16", "f16") for r in rows)
    assert _tests(rows) == [("pp64", 0, 7.82), ("tg16", 0, 2.77),
                            ("pp64", 256, 18.38), ("tg16", 256, 2.51)]


def test_bench_report_among_stderr_lines():
    noise = "load_backend: loaded CPU backend\nwarning: something\n"
    for fmt in ("json", "jsonl", "csv", "md"):
        log = text(f"upstream-bench-q4_0-q4_0-{fmt}")
        assert parse_bench(noise + log + noise, fmt, 4) == parse_bench(log, fmt, 4)


def test_bench_turbo_pair():
    md = parse_bench(text("turbo-bench-turbo4-turbo3-md"), "md")
    assert all((r.type_k, r.type_v) == ("turbo4", "turbo3") for r in md)
    assert _tests(md) == [("pp64", 0, 22.59), ("tg16", 0, 6.56),
                          ("pp64", 256, 18.77), ("tg16", 256, 4.34)]
    jsonl = parse_bench(text("turbo-bench-turbo4-turbo3-jsonl"), "jsonl", expected_rows=4)
    assert [r.avg_ts for r in jsonl] == [8.963678, 5.075248, 18.487813, 6.020738]
    assert all(r.type_v == "turbo3" for r in jsonl)


def test_bench_wrong_count_or_format():
    with pytest.raises(ParseError, match="4 of 5"):
        parse_bench(text("upstream-bench-q4_0-q4_0-jsonl"), "jsonl", expected_rows=5)
    with pytest.raises(ParseError):
        parse_bench(text("upstream-bench-q4_0-q4_0-json"), "csv")
    with pytest.raises(ParseError, match="format"):
        parse_bench("", "sql")


# --------------------------------------------------------------- cut short


def _parser(name: str) -> Callable[[str], object]:
    if "-bench-" not in name:
        return parse_perplexity
    fmt = name.rsplit("-", 1)[1]
    return lambda t: parse_bench(t, fmt, expected_rows=4)


def _last_needed_line_end(name: str, log: str) -> int:
    """Where the last line a parser must read ends (before its newline)."""
    if "-bench-" in name:
        fmt = name.rsplit("-", 1)[1]
        marker = {"json": r"^\]", "md": r"^build: ", "jsonl": r"^\{", "csv": r'^"'}[fmt]
    elif "-ppl-" in name:
        marker = r"Final estimate"
    elif parse_perplexity(log).kld is None:
        marker = r"^\s+\d+\s+\d"  # the last per-chunk row
    else:
        marker = r"^Same top p"
    start = [m.start() for m in re.finditer(marker, log, re.MULTILINE)][-1]
    return log.index("\n", start)


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.log")))
def test_cut_short_copies_raise(name: str):
    log = text(name)
    parse = _parser(name)
    parse(log)  # the whole log parses
    end = _last_needed_line_end(name, log)
    cuts = {end, end - 1, end - 3, *(end * i // 11 for i in range(11))}
    for cut in sorted(cuts):
        with pytest.raises(ParseError):
            parse(log[:cut])
