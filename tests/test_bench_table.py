"""Store round trip and the comparison table, on records built from the real fixture logs."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from tqllama.bench.parse_bench import parse_bench
from tqllama.bench.parse_perplexity import parse_perplexity
from tqllama.bench.store import FileRef, RunRecord, Store
from tqllama.bench.table import render, summarize
from tqllama.cachepair import CachePair
from tqllama.errors import TqError

FIXTURES = Path(__file__).parent / "fixtures" / "bench"
MODEL = FileRef("/models/m.gguf", "ab" * 32)
TEXT = FileRef("/data/wiki.test.raw", "cd" * 32)


def _record(kind: str, k: str, v: str, log: str, depth: int | None = None) -> RunRecord:
    raw = (FIXTURES / f"{log}.log").read_text()
    fields = ({"bench": tuple(r for r in parse_bench(raw, log.rsplit("-", 1)[1], 4)
                              if r.n_depth == depth)} if kind == "bench"
              else {"perplexity": parse_perplexity(raw)})
    params = ({"depth": depth, "n_prompt": 64, "n_gen": 16} if kind == "bench"
              else {"ctx": 128, "chunks": 4})
    return RunRecord(key=f"{kind}-{k}-{v}-{depth}", kind=kind, type_k=k, type_v=v,
                     params=params, command=["llama-x"], build_id="b1", build_manifest=None,
                     model=MODEL, text=None if kind == "bench" else TEXT,
                     log=f"logs/{log}.log", started="2026-01-01T00:00:00+00:00", seconds=1.0,
                     **fields)


@pytest.fixture
def records() -> list[RunRecord]:
    # The q8_0 speed rows are really the f16 fixture's: any numbers serve as a baseline.
    out = [_record("kld", "q8_0", "q8_0", "upstream-kld-q8_0-q8_0-c128x4"),
           _record("kld", "q4_0", "q4_0", "upstream-kld-q4_0-q4_0-c128x4")]
    for depth in (0, 256):
        out.append(_record("bench", "q8_0", "q8_0", "upstream-bench-f16-f16-md", depth))
        out.append(_record("bench", "q4_0", "q4_0", "upstream-bench-q4_0-q4_0-md", depth))
    return [_relabel(r) for r in out]


def _relabel(r: RunRecord) -> RunRecord:
    return replace(r, bench=tuple(replace(b, type_k=r.type_k, type_v=r.type_v) for b in r.bench))


def test_store_round_trip_and_a_torn_last_line(tmp_path: Path, records: list[RunRecord]):
    store = Store(tmp_path)
    for r in records:
        store.append(r)
    assert list(store.load().values()) == records
    with store.results.open("a") as fh:
        fh.write('{"key": "half a li')  # the write a crash cut short
    assert list(Store.open(tmp_path / "results.jsonl").load().values()) == records
    with store.results.open("a") as fh:
        fh.write("\n" + json.dumps({"schema": 1}) + "\n")
    with pytest.raises(TqError, match="damaged"):
        store.load()


def test_rerun_replaces_earlier_record(tmp_path: Path, records: list[RunRecord]):
    store = Store(tmp_path)
    store.append(records[0])
    store.append(replace(records[0], seconds=9.0))
    (only,) = store.load().values()
    assert only.seconds == 9.0


def test_summary_numbers(records: list[RunRecord]):
    q8, q4 = summarize(records, CachePair("q8_0", "q8_0"))
    assert (q4.bits_k, q4.bits_v, q4.bits_mean) == (4.5, 4.5, 4.5)
    assert q4.compression == pytest.approx(16 / 4.5)
    assert q4.kv_mib == 25.31 and q8.kv_mib == 47.81
    assert q4.ppl.value == 35.050502
    assert q4.dppl_pct.value == pytest.approx(6.3312)  # Mean PPL(Q)/PPL(base) 1.063312
    assert q4.kld_mean.value == 0.063507 and q4.kld_p99 == 0.449269
    assert q4.same_top_pct.value == 88.492
    tg256 = q4.speed[("tg16", 256)]
    assert tg256.avg_ts == 1.74 and tg256.ratio == pytest.approx(1.74 / 2.51)
    assert q8.speed[("pp64", 0)].ratio == 1.0


def test_dppl_against_the_full_precision_f16_ppl(records: list[RunRecord]):
    # Without an f16 reference ΔPPL is llama-perplexity's ratio (1.063312 above); with the
    # base run's PPL (33.1128, full-precision logits) it is PPL(Q) / 33.1128.
    base = _record("base", "f16", "f16", "upstream-ppl-f16-c128x4")
    _, q4 = summarize([base, *records], CachePair("q8_0", "q8_0"))
    assert q4.dppl_pct.value == pytest.approx(100 * (35.050502 / 33.1128 - 1))
    assert q4.dppl_pct.error == pytest.approx(2.96)


def test_markdown(records: list[RunRecord]):
    md = render(records, "md")
    lines = md.splitlines()
    assert lines[0].startswith("| K/V | bits K/V | bits | vs f16 | KV MiB | PPL | ΔPPL %")
    assert lines[0].endswith("| pp64 t/s | tg16 t/s | pp64 @ d256 t/s | tg16 @ d256 t/s |")
    q4 = next(ln for ln in lines if ln.startswith("| q4_0/q4_0"))
    for cell in ("4.5/4.5", "3.56x", "25.31", "35.0505 ± 7.8603", "+6.33 ± 2.96", "0.063507",
                 "0.449269", "88.49", "1.7 (0.69x)"):
        assert cell in q4, cell
    assert "ratio to q8_0/q8_0" in md


def test_csv_and_json_agree(records: list[RunRecord]):
    rows = list(csv.DictReader(io.StringIO(render(records, "csv"))))
    data = json.loads(render(records, "json"))
    assert [r["pair"] for r in rows] == [d["pair"] for d in data] == ["q8_0/q8_0", "q4_0/q4_0"]
    assert float(rows[1]["kld_p99"]) == data[1]["kld_p99"] == 0.449269
    assert data[1]["tg16_d256_ratio"] == pytest.approx(1.74 / 2.51, abs=1e-6)
    assert data[0]["pp64_d0_ts"] == 7.82


def test_missing_baseline_and_mixed_sweeps(records: list[RunRecord]):
    with pytest.raises(TqError, match="--baseline"):
        render(records, "md", CachePair("q5_0", "q5_0"))
    other = replace(records[1], key="x", params={"ctx": 256, "chunks": 4}, type_k="iq4_nl",
                    type_v="iq4_nl")
    with pytest.raises(TqError, match="one sweep"):
        render([*records, other], "md")
