"""Environment settings per cache pair (`K/V+NAME=VALUE`): the grammar, what keys and stores a
run, the refusals; and a real sweep whose tools get the setting (SmolLM2, slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tqlab.tools import tqllama_cli
from tqllama.bench.store import Store
from tqllama.cachepair import CachePair
from tqllama.errors import TqError
from tqllama.plan import parse_pair

CENTRED = "q8_0/q8_0+TQLLAMA_CENTER_ALL_KEYS=1"
# patch 0038's log line, which llama-perplexity and llama-server print at -lv 4
CENTRED_LINE = "TQLLAMA_CENTER_ALL_KEYS=1: every quantized K layer is centred"


def test_settings_parse_sorted_and_label_round_trips():
    pair = CachePair.parse("turbo4/turbo4@none+TQLLAMA_TURBO_VCENTER=1+TQLLAMA_TURBO_SINK=k")
    assert (pair.k, pair.v, pair.policy) == ("turbo4", "turbo4", "none")
    assert pair.env == (("TQLLAMA_TURBO_SINK", "k"), ("TQLLAMA_TURBO_VCENTER", "1"))
    assert pair.label == "turbo4/turbo4@none+TQLLAMA_TURBO_SINK=k+TQLLAMA_TURBO_VCENTER=1"
    assert CachePair.parse(pair.label) == pair
    # one spelling per pair: the order given does not make another pair
    assert CachePair.parse("turbo4/turbo4@none+TQLLAMA_TURBO_SINK=k+TQLLAMA_TURBO_VCENTER=1") \
        == pair
    b1 = CachePair.parse("turbo2/turbo2@b1:f16/f16+TQLLAMA_TURBO_SIGNS=0")
    assert (b1.boundary, b1.k_boundary, b1.env) == (1, "f16", (("TQLLAMA_TURBO_SIGNS", "0"),))
    assert b1.label == "turbo2/turbo2@b1:f16/f16+TQLLAMA_TURBO_SIGNS=0"


def test_settings_make_another_run_with_the_same_command_line():
    plain, centred = CachePair("q8_0", "q8_0"), CachePair.parse(CENTRED)
    assert centred != plain and centred.plain == plain
    assert centred.args() == plain.args()  # the setting goes into the environment, not argv
    assert centred.key_fields() == {"k": "q8_0", "v": "q8_0",
                                    "env": {"TQLLAMA_CENTER_ALL_KEYS": "1"}}
    assert plain.key_fields() == {"k": "q8_0", "v": "q8_0"}  # keys made before settings hold
    assert centred.slug == "q8_0-q8_0-TQLLAMA_CENTER_ALL_KEYS-1"
    policy = CachePair.parse("turbo4/turbo4@tuned:dir/smol.policy+TQLLAMA_TURBO_VCENTER=1")
    assert policy.policy_file == "dir/smol.policy"
    assert policy.slug == "turbo4-turbo4-tuned-smol-TQLLAMA_TURBO_VCENTER-1"
    # a value may hold what a file name must not
    assert CachePair.parse("q8_0/q8_0+TQLLAMA_X=a/b:c").slug == "q8_0-q8_0-TQLLAMA_X-a-b-c"


@pytest.mark.parametrize("bad", ["q8_0/q8_0+", "q8_0/q8_0+centre", "q8_0/q8_0+lower=1",
                                 "q8_0/q8_0+A=", "q8_0/q8_0+A=1=2", "q8_0/q8_0+A=1+A=2"])
def test_a_bad_setting_is_one_line_that_shows_the_spelling(bad: str):
    with pytest.raises(TqError, match=r"q8_0/q8_0\+TQLLAMA_CENTER_ALL_KEYS=1") as err:
        CachePair.parse(bad)
    assert "\n" not in str(err.value)


def test_plan_refuses_settings():
    with pytest.raises(TqError, match="pass q8_0/q8_0 instead"):
        parse_pair(CENTRED)


@pytest.mark.slow
def test_the_tools_run_with_the_pairs_setting(built_tools, model: Path, text: Path,
                                              tmp_path: Path):
    """Two rows with the same types, the setting in one: llama-perplexity and llama-server get
    it (their logs say so), the store keeps it, the table shows both, a rerun runs nothing."""
    out = tmp_path / "out"
    bin_dir = Path(built_tools.binaries["llama-perplexity"]).parent
    args = ["bench", "sweep", "--bin-dir", str(bin_dir), "--model", str(model),
            "--text", str(text), "--cache", "q8_0/q8_0", "--cache", CENTRED,
            "--ctx", "128", "--chunks", "2", "--depths", "", "--threads", "2",
            "--passkey", "512", "--passkey-depths", "0.5", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "TQLLAMA_CENTER_ALL_KEYS"}
    proc = tqllama_cli(args, tmp_path / "cache", env)
    table, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err
    records = [r for r in Store(out).load().values() if r.kind != "base"]
    assert {(r.kind, r.pair.label) for r in records} == {
        (kind, label) for kind in ("kld", "passkey") for label in ("q8_0/q8_0", CENTRED)}
    for r in records:
        log = (out / r.log).read_text(errors="replace")
        assert (CENTRED_LINE in log) == bool(r.env), (r.kind, r.pair.label)
        assert r.env == ({"TQLLAMA_CENTER_ALL_KEYS": "1"} if r.pair.env else {})
    kld = {r.pair.label: r.perplexity.kld.kld_mean.value for r in records
           if r.kind == "kld" and r.perplexity and r.perplexity.kld}
    assert len(kld) == 2 and kld["q8_0/q8_0"] != kld[CENTRED]
    rows = [line for line in table.splitlines() if line.startswith("| q8_0/q8_0")]
    assert [row.split("|")[1].strip() for row in rows] == ["q8_0/q8_0", CENTRED]
    line = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    assert "env" in line
    again = tqllama_cli(args, tmp_path / "cache", env)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0 and "4 of 4 runs already stored" in err
