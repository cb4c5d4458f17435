"""Boundary layers in the sweep: pair labels, the `seed` preset, bits per layer mix, skipped
pairs, stored records and the recovered share of the KLD gap. Fast: no tools run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tqllama.bench.parse_perplexity import Estimate, parse_kv_cache
from tqllama.bench.presets import preset
from tqllama.bench.store import FileRef, RunRecord, Store
from tqllama.bench.sweep import Environment, SweepSettings, ToolOptions, plan, runnable_pairs
from tqllama.bench.table import PairRow, boundary_gains, gap_reference, layer_mix_bits, render
from tqllama.cachepair import CachePair
from tqllama.errors import TqError

# A real line of llama-perplexity -lv 4 (SmolLM2, -c 512: 4 streams, turbo2/turbo2,
# --cache-boundary-layers 2)
KV_LINE = ("0.00.644.796 I llama_kv_cache: size =    8.67 MiB "
           "(   512 cells,  30 layers,  4/4 seqs), "
           "K (turbo2):    2.74 MiB + K (q8_0):    1.59 MiB, "
           "V (turbo2):    2.74 MiB + V (q8_0):    1.59 MiB\n")


def test_labels_round_trip():
    b2 = CachePair.parse("turbo2/turbo2@b2")
    assert (b2.k, b2.v, b2.boundary, b2.k_boundary, b2.v_boundary) == (
        "turbo2", "turbo2", 2, "q8_0", "q8_0")
    assert b2.label == "turbo2/turbo2@b2" and b2.plain == CachePair("turbo2", "turbo2")
    f16 = CachePair.parse("turbo2/turbo2@b1:f16/q8_0")
    assert f16.label == "turbo2/turbo2@b1:f16/q8_0" and f16.types == {"turbo2", "f16", "q8_0"}
    # N = 0 is the plain pair, whatever boundary types it names
    assert CachePair.parse("turbo2/turbo2@b0:f16/f16") == CachePair("turbo2", "turbo2")
    assert CachePair.parse("turbo2/turbo2@b0").label == "turbo2/turbo2"
    for bad in ("turbo2/turbo2@2", "turbo2/turbo2@b", "turbo2/turbo2@b2:f16", "t2/t2@b-1"):
        with pytest.raises(TqError, match="K/V@bN"):
            CachePair.parse(bad)


def test_command_line_and_keys():
    b2 = CachePair.parse("turbo2/turbo2@b2:f16/f16")
    assert b2.args() == ["-ctk", "turbo2", "-ctv", "turbo2", "--cache-boundary-layers", "2",
                         "-ctkb", "f16", "-ctvb", "f16"]
    assert CachePair("q8_0", "turbo3").args() == ["-ctk", "q8_0", "-ctv", "turbo3"]
    # plain pairs keep the keys of stored results from before boundary layers existed
    assert CachePair("q8_0", "turbo3").key_fields() == {"k": "q8_0", "v": "turbo3"}
    assert b2.key_fields()["boundary"] == [2, "f16", "f16"]
    assert b2.slug == "turbo2-turbo2-b2-f16-f16"


def test_both_tools_get_the_boundary_options():
    env = Environment(perplexity=Path("llama-perplexity"), bench=Path("llama-bench"),
                      build_id="b1", build_manifest=None, model=FileRef("/m.gguf", "ab" * 32),
                      text=FileRef("/t.raw", "cd" * 32))
    plain, b2 = CachePair("turbo2", "turbo2"), CachePair.parse("turbo2/turbo2@b2")
    _, runs = plan(SweepSettings(pairs=(plain, b2), depths=(0,)), env)
    assert [(r.kind, r.pair) for r in runs] == [("kld", plain), ("kld", b2), ("bench", plain),
                                                ("bench", b2)]
    for run in runs:
        tail = run.command[run.command.index("-ctk"):][:10]
        assert (tail[4:] == b2.args()[4:]) == (run.pair == b2)
    assert len({r.key for r in runs}) == 4 and "-b2-" in runs[1].log_name()


def test_seed_preset():
    labels = [p.label for p in preset("seed")]
    assert labels == [
        "q8_0/q8_0", "q8_0/turbo4", "q8_0/turbo3", "q8_0/turbo2",
        "turbo4/q8_0", "turbo3/q8_0", "turbo2/q8_0", "turbo3/turbo3",
        "turbo2/turbo2", "turbo2/turbo2@b1", "turbo2/turbo2@b2", "turbo2/turbo2@b4",
        "turbo4_qjl/q8_0", "turbo3_qjl/q8_0", "turbo2_qjl/q8_0"]


def test_bits_per_layer_mix():
    # SmolLM2: 30 layers; @b2 keeps 2 + 2 of them in q8_0 (8.5 bits), 26 in turbo2 (2.25)
    k, v = layer_mix_bits(CachePair.parse("turbo2/turbo2@b2"), 30)
    assert k == v == pytest.approx((4 * 8.5 + 26 * 2.25) / 30)
    k, v = layer_mix_bits(CachePair.parse("turbo2/q8_0@b1:f16/f16"), 30)
    assert k == pytest.approx((2 * 16 + 28 * 2.25) / 30)
    assert v == pytest.approx((2 * 16 + 28 * 8.5) / 30)
    assert layer_mix_bits(CachePair.parse("turbo2/turbo2@b20"), 30) == (8.5, 8.5)  # all layers
    assert layer_mix_bits(CachePair("turbo4", "q8_0"), None) == (4.25, 8.5)
    assert layer_mix_bits(CachePair.parse("turbo2/turbo2@b2"), None) == (None, None)


def test_kv_line_with_boundary_layers_sums_its_shares():
    kv = parse_kv_cache(KV_LINE)
    assert (kv.type_k, kv.type_v, kv.layers, kv.cells, kv.streams) == (
        "turbo2", "turbo2", 30, 512, 4)
    assert kv.k_parts == kv.v_parts == (("turbo2", 2.74), ("q8_0", 1.59))
    assert kv.k_mib == kv.v_mib == 4.33 and kv.total_mib == 8.67
    plain = parse_kv_cache(KV_LINE.replace(" + K (q8_0):    1.59 MiB", "")
                           .replace(" + V (q8_0):    1.59 MiB", ""))
    assert plain.k_parts == (("turbo2", 2.74),) and plain.k_mib == 2.74


OPTIONS = ToolOptions(k_types=("f16", "q8_0", "turbo2", "turbo3"),
                      v_types=("f16", "q8_0", "turbo2", "turbo3"), boundary=True)


def test_pairs_the_build_lacks_are_skipped_with_a_note():
    pairs = [CachePair.parse(x) for x in ("q8_0/q8_0", "turbo2/turbo2@b2", "turbo4_qjl/q8_0",
                                          "turbo3_qjl/q8_0", "turbo2/turbo2@b1:q4_0/q8_0")]
    kept, notes = runnable_pairs(pairs, OPTIONS, Path("llama-perplexity"))
    assert [p.label for p in kept] == ["q8_0/q8_0", "turbo2/turbo2@b2"]
    assert notes == ["skipped turbo4_qjl/q8_0: the build has no turbo4_qjl",
                     "skipped turbo3_qjl/q8_0: the build has no turbo3_qjl",
                     "skipped turbo2/turbo2@b1:q4_0/q8_0: the build has no q4_0"]
    upstream = replace(OPTIONS, boundary=False)
    kept, notes = runnable_pairs(pairs[:2], upstream, Path("llama-perplexity"))
    assert kept == (pairs[0],)
    assert notes == ["skipped turbo2/turbo2@b2: the build has no --cache-boundary-layers"]


def test_a_type_no_build_knows_is_an_error():
    with pytest.raises(TqError, match="turbo9 unknown to llama-perplexity: it has f16, q8_0"):
        runnable_pairs([CachePair("q8_0", "q8_0"), CachePair.parse("turbo2/turbo2@b1:turbo9/q8_0")],
                       OPTIONS, Path("llama-perplexity"))


def _kld_record(pair: CachePair, kld: float, key: str) -> RunRecord:
    from tqllama.bench.parse_perplexity import KldSummary, PerplexityResult

    e = Estimate(kld, kld / 20)
    summary = KldSummary(ppl_q=Estimate(20.0, 0.5), ppl_base=Estimate(19.0, 0.5),
                         cor_ln_ppl_pct=99.0, ln_ppl_ratio=Estimate(0.05, 0.01),
                         ppl_ratio=Estimate(1.05, 0.01), ppl_diff=Estimate(1.0, 0.1), kld_mean=e,
                         kld_quantiles={"99.0%": 10 * kld}, delta_p_mean_pct=Estimate(-1, 0.1),
                         delta_p_quantiles_pct={}, delta_p_rms_pct=Estimate(5, 0.1),
                         same_top_p_pct=Estimate(80, 1))
    kv = parse_kv_cache(KV_LINE)
    result = PerplexityResult(n_chunks=4, n_ctx=512, kv_cache=kv, chunk_ppl=(), final_ppl=None,
                              kld_chunks=(), kld=summary)
    return RunRecord(key=key, kind="kld", type_k=pair.k, type_v=pair.v, boundary=pair.boundary,
                     type_k_boundary=pair.k_boundary, type_v_boundary=pair.v_boundary,
                     params={"ctx": 512, "chunks": 4}, command=["llama-perplexity"],
                     build_id="b1", build_manifest=None, model=FileRef("/m.gguf", "ab" * 32),
                     text=FileRef("/t.raw", "cd" * 32), log="logs/x.log",
                     started="2026-01-01T00:00:00+00:00", seconds=1.0, perplexity=result)


@pytest.fixture
def seed_records() -> list[RunRecord]:
    klds = {"turbo3/turbo3": 0.2, "turbo2/turbo2": 1.0, "turbo2/turbo2@b1": 0.8,
            "turbo2/turbo2@b2": 0.6, "turbo2/turbo2@b4": 0.4, "q8_0/turbo2": 0.1}
    return [_kld_record(CachePair.parse(label), kld, f"k{i}")
            for i, (label, kld) in enumerate(klds.items())]


def test_recovered_share_of_the_gap(seed_records: list[RunRecord]):
    assert gap_reference(CachePair.parse("turbo2/turbo2@b2")) == CachePair("turbo3", "turbo3")
    assert gap_reference(CachePair("turbo2", "q8_0")) == CachePair("turbo3", "q8_0")
    assert gap_reference(CachePair("q8_0", "f16")) is None
    rows = [PairRow(r.pair, None, None, kld_mean=r.perplexity.kld.kld_mean)
            for r in seed_records]
    gains = boundary_gains(rows)
    assert [(g.row.pair.label, round(g.recovered, 6)) for g in gains] == [
        ("turbo2/turbo2@b1", 0.25), ("turbo2/turbo2@b2", 0.5), ("turbo2/turbo2@b4", 0.75)]
    assert gains[0].reference.pair == CachePair("turbo3", "turbo3")


def test_table_shows_boundary_rows_and_gaps(seed_records: list[RunRecord], tmp_path: Path):
    store = Store(tmp_path)
    for r in seed_records:
        store.append(r)
    loaded = list(store.load().values())
    assert loaded == seed_records and loaded[3].pair == CachePair.parse("turbo2/turbo2@b2")
    md = render(loaded, "md", baseline=None)
    b2 = next(ln for ln in md.splitlines() if ln.startswith("| turbo2/turbo2@b2 | 3.08/3.08 "))
    assert "| 3.08 | 5.19x |" in b2  # mean bits over 30 layers: (4 x 8.5 + 26 x 2.25) / 30
    gap = [ln for ln in md.splitlines() if ln.startswith("| turbo2/turbo2@b2 | 2 |")]
    assert gap == ["| turbo2/turbo2@b2 | 2 | 3.08 | 0.600000 | 1.000000 | turbo3/turbo3 | "
                   "0.200000 | 50.0% |"]
    import json

    data = {d["pair"]: d for d in json.loads(render(loaded, "json", baseline=None))}
    assert data["turbo2/turbo2@b4"]["gap_recovered"] == 0.75
    assert data["turbo2/turbo2@b4"]["boundary"] == 4
    assert data["turbo2/turbo2"]["gap_recovered"] is None


def test_records_from_before_boundary_layers_still_load(tmp_path: Path,
                                                        seed_records: list[RunRecord]):
    import dataclasses
    import json

    old = dataclasses.asdict(seed_records[0])
    for name in ("boundary", "type_k_boundary", "type_v_boundary"):
        del old[name]
    for name in ("k_parts", "v_parts"):
        del old["perplexity"]["kv_cache"][name]
    (tmp_path / "results.jsonl").write_text(json.dumps(old) + "\n")
    (record,) = Store(tmp_path).load().values()
    assert record.pair == CachePair("turbo3", "turbo3") and record.boundary == 0
