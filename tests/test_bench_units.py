"""Fast checks of the sweep's plain parts: pairs, presets, config files, cache sizes, ETA."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from tqllama.bench import base_logits
from tqllama.bench.logtext import ParseError
from tqllama.bench.parse_perplexity import parse_perplexity
from tqllama.bench.plot import pareto_front
from tqllama.bench.presets import PRESETS, preset
from tqllama.bench.progress import Progress
from tqllama.bench.runner import diagnose, run_logged
from tqllama.bench.sweep import load_config, pairs_from, parse_depths, settings_from
from tqllama.cachepair import CachePair
from tqllama.errors import TqError
from tqllama.proc import ToolError
from tqllama.types import CACHE_TYPES, TURBO2, TURBO3, TURBO4, cache_type


def test_cache_pair_parse_and_label():
    assert CachePair.parse(" q8_0/turbo3 ") == CachePair("q8_0", "turbo3")
    assert CachePair("turbo4", "turbo2").label == "turbo4/turbo2"
    for bad in ("q8_0", "q8_0/", "/q4_0", "a/b/c"):
        with pytest.raises(TqError, match="K/V"):
            CachePair.parse(bad)


def test_presets_use_known_types_and_hold_their_pairs():
    for pairs in PRESETS.values():
        assert len(set(pairs)) == len(pairs)
        for p in pairs:
            assert p.k in CACHE_TYPES and p.v in CACHE_TYPES
    labels = [p.label for p in preset("default")]
    assert labels == ["f16/f16", "q8_0/q8_0", "q4_0/q4_0", "turbo4/turbo4", "turbo3/turbo3",
                      "turbo2/turbo2", "q8_0/turbo3", "turbo4/turbo3"]
    full = set(preset("full"))
    assert set(preset("default")) <= full and set(preset("asymmetric")) <= full
    assert CachePair("iq4_nl", "iq4_nl") in full
    assert CachePair("turbo5", "turbo5") in set(preset("turbo5")) <= full
    with pytest.raises(TqError, match="default"):
        preset("nope")


def test_pairs_from_defaults_and_merges():
    assert pairs_from(None, []) == preset("default")
    mixed = pairs_from("default", ["q8_0/q8_0", "q5_0/q5_0"])
    assert mixed[-1] == CachePair("q5_0", "q5_0") and len(mixed) == len(preset("default")) + 1


def test_types_table():
    assert (TURBO2, TURBO3, TURBO4) == (43, 44, 45)
    assert cache_type("turbo3").bits_per_value == 3.25
    assert cache_type("q8_0").ggml_id == 8 and cache_type("iq4_nl").ggml_id == 20
    assert cache_type("turbo2").compression_vs_f16 == pytest.approx(16 / 2.25)
    assert cache_type("turbo5").ggml_id == 52 and cache_type("turbo5").bits_per_value == 5.25
    with pytest.raises(TqError, match="turbo4"):
        cache_type("turbo6")


def test_depths():
    assert parse_depths("0, 4096,16384") == (0, 4096, 16384)
    assert parse_depths([0, 1024]) == (0, 1024)
    for bad in ("0,x", "-1"):
        with pytest.raises(TqError, match="--depths"):
            parse_depths(bad)


def test_config_file(tmp_path: Path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('preset = "default"\ncaches = ["q5_0/q5_0"]\ndepths = [0, 1024]\n'
                   'chunks = 16\nbin-dir = "/opt/llama/bin"\nout = "res"\n')
    got = load_config(cfg)
    assert got["chunks"] == 16 and got["depths"] == (0, 1024)
    assert got["bin_dir"] == Path("/opt/llama/bin") and got["out"] == Path("res")
    assert got["pairs"][-1] == CachePair("q5_0", "q5_0")
    cfg.write_text("chunkz = 3\n")
    with pytest.raises(TqError, match="chunkz"):
        load_config(cfg)
    cfg.write_text("chunks = \n")
    with pytest.raises(TqError, match="TOML"):
        load_config(cfg)


def test_base_logits_size_formula():
    # perplexity.cpp: 20-byte header, the tokens, then per chunk (ctx/2 - 1) rows of
    # 2*ceil(vocab/2)+4 uint16 values. 128 ctx, 4 chunks, SmolLM2's 49152-token vocabulary:
    assert base_logits.expected_bytes(4, 128, 49152) == 20 + 4 * 128 * 4 + 4 * 63 * 49156 * 2


def test_eviction_keeps_the_newest_under_the_limit(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TQLLAMA_CACHE", str(tmp_path))
    monkeypatch.setenv("TQLLAMA_KLD_CACHE_GB", str(3.5 * 1024 / 2**30))  # 3.5 KiB
    root = base_logits.cache_root()
    root.mkdir(parents=True)
    files = []
    for i in range(4):
        path = base_logits.path_for(f"{i}" * 24)
        path.write_bytes(b"x" * 1024)
        os.utime(path, (1000 + i, 1000 + i))
        files.append(path)
    base_logits.touch(files[0])  # used just now: the most recent
    removed = base_logits.evict(keep=files[1])
    assert removed == [files[2]]
    assert [p.exists() for p in files] == [True, True, False, True]
    assert base_logits.clean() == (3, 3 * 1024)
    assert not any(p.exists() for p in files)


def test_disk_check_refuses_what_cannot_fit(tmp_path: Path):
    with pytest.raises(TqError, match="--chunks"):
        base_logits.check_disk(tmp_path / "x.kld", 1 << 60)
    base_logits.check_disk(tmp_path / "x.kld", 1024)


def test_progress_eta_from_finished_runs_of_the_same_group():
    out = io.StringIO()
    progress = Progress(out, live=False)
    todo = [("perplexity", 1000), ("perplexity", 1000), ("bench@0", 100), ("bench@0", 100)]
    progress.start(todo, skipped=2)
    assert progress.eta() == "?"
    progress.begin("kld a")
    progress.end("kld a", 30.0, "PPL 1")
    # one perplexity run at 30 s; the bench runs guessed at 100/1000 of its pace: 3 s each
    assert progress.eta() == "0:36"
    progress.begin("kld b")
    progress.end("kld b", 50.0, "PPL 2")
    progress.begin("bench a")
    progress.end("bench a", 5.0, "fast")
    assert progress.eta() == "0:05"
    text = out.getvalue()
    assert "2 of 6 runs already stored" in text and "[5/6] bench a" in text


def test_pareto_front():
    points = [(2.25, 0.3), (3.25, 0.08), (4.25, 0.02), (4.5, 0.045), (4.5, 0.04), (8.5, 0.004)]
    assert pareto_front(points) == [(2.25, 0.3), (3.25, 0.08), (4.25, 0.02), (8.5, 0.004)]


def test_run_logged_keeps_both_streams_and_reports_a_failure(tmp_path: Path):
    log = tmp_path / "logs" / "x.log"
    ok = run_logged(["sh", "-c", "echo out; echo err >&2"], log)
    assert ok >= 0 and log.read_text().splitlines()[1:] == ["out", "err"]
    with pytest.raises(ToolError) as exc:
        run_logged(["sh", "-c", "echo loading; echo 'error: failed to load model' >&2; exit 3"],
                   log)
    msg = str(exc.value)
    assert "exited with 3" in msg and "failed to load model" in msg and str(log) in msg
    assert "\n" not in msg
    with pytest.raises(ToolError, match="--bin-dir"):
        run_logged([str(tmp_path / "no-such-tool")], log)


ERRORS = Path(__file__).parent / "fixtures" / "bench" / "errors"


@pytest.mark.parametrize(("log", "says"), [
    ("perplexity-short-text", "too short for a context of 128: it has 26 tokens; it needs at "
                              "least 256; pass a longer --text or a smaller --ctx"),
    ("perplexity-unknown-type", "does not support cache type turbo3"),
    ("bench-unknown-type", "llama-bench rejects the cache type given to -ctk"),
])
def test_diagnose_real_failures(log: str, says: str):
    assert says in (diagnose(ERRORS / f"{log}.log") or "")


def test_short_text_log_exits_0_but_does_not_parse():
    with pytest.raises(ParseError, match="never started"):
        parse_perplexity((ERRORS / "perplexity-short-text.log").read_text())


def test_config_file_types_are_checked(tmp_path: Path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('chunks = "16"\n')
    with pytest.raises(TqError, match="chunks must be int"):
        load_config(cfg)


def test_preset_long_sets_context_and_passkey_but_options_win(tmp_path: Path):
    none = {"ctx": None, "chunks": None, "depths": None, "passkey": None,
            "passkey_depths": None, "passkey_keys": None}
    long = settings_from(None, (), "long", **none)
    assert (long.ctx, long.chunks, long.depths) == (8192, 1, ())
    assert long.passkey == (2048, 4096, 8192) and long.passkey_depths == (0.5,)
    assert "turbo4/turbo4" in [p.label for p in long.pairs]
    mine = settings_from(None, (), "long", **{**none, "ctx": 4096, "passkey": "1024,2048",
                                               "passkey_depths": "0.25"})
    assert (mine.ctx, mine.chunks, mine.passkey, mine.passkey_depths) == (
        4096, 1, (1024, 2048), (0.25,))
    config = tmp_path / "s.toml"
    config.write_text("chunks = 8\npasskey = [4096]\n")
    from_file = settings_from(config, (), "long", **none)
    assert (from_file.ctx, from_file.chunks, from_file.passkey) == (8192, 8, (4096,))
    assert settings_from(None, (), None, **none).passkey == ()


@pytest.mark.parametrize(("option", "value"), [("passkey", "2048,abc"), ("passkey", "32"),
                                               ("passkey_depths", "0.5,1.0"),
                                               ("passkey_depths", "-0.1")])
def test_bad_passkey_options_are_one_line(option: str, value: str):
    from tqllama.bench.sweep import settings_from

    with pytest.raises(TqError, match=f"--{option.replace('_', '-')} must be") as err:
        settings_from(None, (), None, **{option: value})
    assert "\n" not in str(err.value)


def test_passkey_seed_makes_other_runs_and_seed_0_keeps_the_stored_keys():
    from tqllama.bench.store import FileRef
    from tqllama.bench.sweep import Environment, SweepSettings, plan

    env = Environment(perplexity=Path("llama-perplexity"), bench=Path("llama-bench"),
                      build_id="b1", build_manifest=None, model=FileRef("/m.gguf", "ab" * 32),
                      text=FileRef("/t.raw", "cd" * 32))
    pair = CachePair("turbo4", "turbo4")

    def passkey_run(seed: int):
        s = SweepSettings(pairs=(pair,), depths=(), passkey=(2048, 8192), passkey_seed=seed)
        (run,) = [r for r in plan(s, env)[1] if r.kind == "passkey"]
        return run

    plain, other = passkey_run(0), passkey_run(1)
    assert "passkey_seed" not in plain.params  # the key of runs stored before the option
    assert other.params["passkey_seed"] == 1 and other.key != plain.key
    assert settings_from(None, (), None, passkey_seed=3).passkey_seed == 3


def test_a_runs_parts_are_kept_until_its_record_replaces_them(tmp_path: Path):
    from tqllama.bench.store import PARTIAL_DIR, FileRef, RunRecord, Store

    store = Store(tmp_path)
    assert store.parts("k1") == []
    store.add_part("k1", {"trial": 1})
    store.add_part("k1", {"trial": 2})
    store.add_part("k2", {"trial": 9})
    with (tmp_path / PARTIAL_DIR / "k1.jsonl").open("a") as fh:
        fh.write('{"trial": 3, "answ')  # a write cut short by a crash: that trial never finished
    assert store.parts("k1") == [{"trial": 1}, {"trial": 2}]
    record = RunRecord(key="k1", kind="passkey", type_k="q8_0", type_v="q8_0", params={},
                       command=[], build_id="b", build_manifest=None,
                       model=FileRef("/m", "ab"), text=None, log="l", started="s", seconds=1.0)
    store.append(record)
    assert store.parts("k1") == [] and list(store.load()) == ["k1"]
    assert store.parts("k2") == [{"trial": 9}]
    store.drop_parts("k2")
    assert store.parts("k2") == []
