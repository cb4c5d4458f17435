"""Real sweeps on SmolLM2 with llama.cpp tools: resume after Ctrl-C, one-line errors, table.

The tools come from `$TQLLAMA_TEST_BIN_DIR` (any llama.cpp build) or from `tqllama build`;
without either these tests are skipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tqlab.tools import tqllama_cli
from tqllama import assets
from tqllama.bench.parse_bench import parse_bench
from tqllama.bench.parse_perplexity import parse_perplexity
from tqllama.bench.store import Store
from tqllama.errors import TqError

pytestmark = pytest.mark.slow


def _bin_dir() -> Path:
    env = os.environ.get("TQLLAMA_TEST_BIN_DIR")
    if env:
        return Path(env)
    from tqllama.build import binary_path

    try:
        return binary_path("llama-perplexity").parent
    except TqError:
        pytest.skip("no llama.cpp tools: run `tqllama build` or set TQLLAMA_TEST_BIN_DIR")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A sweep small enough for a test: 2 pairs, 2 chunks of 128, one depth, short tests."""
    return ["bench", "sweep", "--bin-dir", str(_bin_dir()),
            "--model", str(assets.fetch_model("smollm2-135m")), "--text",
            str(assets.resolve_text(None)), "--cache", "q8_0/q8_0", "--cache", "q4_0/q4_0",
            "--ctx", "128", "--chunks", "2", "--depths", "0", "--n-prompt", "32", "--n-gen", "8",
            "--reps", "1", "--threads", "2"]


def _lines(results: Path) -> list[str]:
    return results.read_text().splitlines() if results.is_file() else []


def test_interrupted_sweep_resumes_without_repeating(tiny: list[str], tmp_path: Path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    results = out / "results.jsonl"
    proc = tqllama_cli([*tiny, "--out", str(out)], cache)
    deadline = time.monotonic() + 600
    while not _lines(results):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no run finished in 10 minutes"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C, to the sweep only: it must stop its tool
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "interrupted" in err and "run the same command again" in err
    first = _lines(results)
    assert 1 <= len(first) < 5
    assert not list((cache / "kld-base").glob("*.partial"))

    again = tqllama_cli([*tiny, "--out", str(out)], cache)
    table, err = again.communicate(timeout=1200)
    assert again.returncode == 0, err
    final = _lines(results)
    assert final[: len(first)] == first  # kept as it was, appended after
    keys = [json.loads(line)["key"] for line in final]
    assert len(keys) == len(set(keys)) == 5  # base, 2 KLD, 2 bench: nothing ran twice
    finished = [ln for ln in err.splitlines() if re.match(r"\[\d+/\d+\] .*  \d+:\d\d  ", ln)]
    assert len(finished) == 5 - len(first)  # only what was missing ran
    assert "] base" not in err  # the base logits of the first attempt were reused

    # The table shows the numbers of the logs the store points at.
    records = Store(out).load()
    kld = next(r for r in records.values() if r.kind == "kld" and r.type_k == "q4_0")
    from_log = parse_perplexity((out / kld.log).read_text())
    assert from_log == kld.perplexity and from_log.kld is not None  # 2 x 63 tokens scored
    bench = next(r for r in records.values() if r.kind == "bench" and r.type_k == "q4_0")
    assert tuple(parse_bench((out / bench.log).read_text(), "jsonl", 2)) == bench.bench
    row = next(line for line in table.splitlines() if line.startswith("| q4_0/q4_0"))
    assert f"{from_log.kld.kld_mean.value:.6f}" in row
    assert f"{bench.bench[0].avg_ts:.1f}" in row and "(1.00x)" in table
    # ... and what `tqllama bench table` prints from the same results: ΔPPL against the
    # f16 base's PPL in both, which the sweep's table once lacked
    shown = tqllama_cli(["bench", "table", str(out)], cache)
    table_again, err = shown.communicate(timeout=60)
    assert shown.returncode == 0, err
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert rows and rows == [line for line in table_again.splitlines() if line.startswith("|")]

    # Everything is stored: a third run runs nothing.
    third = tqllama_cli([*tiny, "--out", str(out)], cache)
    _, err = third.communicate(timeout=300)
    assert third.returncode == 0 and "4 of 4 runs already stored" in err  # (plus the base)
    assert _lines(results) == final


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is pid: their command names."""
    out = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:  # it ended while we looked
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out[int(entry.name)] = stat[stat.index("(") + 1 : stat.rindex(")")]
    return out


def test_a_killed_sweep_stops_its_server_and_keeps_its_runs(tiny: list[str], tmp_path: Path):
    """SIGTERM (kill, a scheduler's time limit) unwinds as Ctrl-C does: the llama-server of
    a passkey run is stopped, not left running, and the finished KLD run is kept."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [*tiny[: tiny.index("--cache")], "--cache", "q8_0/q8_0", "--ctx", "128", "--chunks",
            "1", "--depths", "", "--threads", "2", "--passkey", "4096", "--passkey-depths",
            "0.5", "--out", str(out)]
    proc = tqllama_cli(args, cache)
    deadline = time.monotonic() + 600
    while not (servers := [p for p, name in _children(proc.pid).items() if name == "llama-server"]):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no llama-server started in 10 minutes"
        time.sleep(0.2)
    time.sleep(2)
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err
    assert "interrupted: 2 finished runs are kept" in err  # the base and the KLD run
    assert not Path(f"/proc/{servers[0]}").exists()  # stopped and reaped
    assert [json.loads(line)["kind"] for line in _lines(out / "results.jsonl")] == ["base", "kld"]


def _one_line_error(proc: subprocess.Popen[str]) -> str:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert lines[-1].startswith("tqllama: error: ") and "Traceback" not in err
    return lines[-1]


def test_text_too_short_says_what_to_do(tiny: list[str], tmp_path: Path):
    short = tmp_path / "short.txt"
    short.write_text("Too short to score. " * 5)
    args = [*tiny, "--text", str(short), "--out", str(tmp_path / "out")]
    line = _one_line_error(tqllama_cli(args, tmp_path / "cache"))
    assert "too short" in line and "--ctx" in line and "log:" in line


def test_unknown_cache_type_lists_the_builds_types(tiny: list[str], tmp_path: Path):
    args = [*tiny, "--cache", "q4_0/turbo9", "--out", str(tmp_path / "out")]
    line = _one_line_error(tqllama_cli(args, tmp_path / "cache"))
    assert "turbo9" in line and "q8_0" in line and "iq4_nl" in line
    assert not (tmp_path / "out").exists()


def test_tool_crash_names_the_log(tiny: list[str], tmp_path: Path):
    # A well-formed GGUF header with no weights: tqllama reads it, llama.cpp cannot load it.
    import gguf

    not_a_model = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(not_a_model), "llama")
    writer.add_token_list(["a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    args = [*tiny, "--model", str(not_a_model), "--out", str(tmp_path / "out")]
    line = _one_line_error(tqllama_cli(args, tmp_path / "cache"))
    assert "llama-perplexity exited with" in line and "log: " in line
    log = Path(line.rsplit("log: ", 1)[1].rstrip(")"))
    assert log.is_file() and log.parent.parent == tmp_path / "out"


def test_passkey_runs_are_stored_and_tabled(tiny: list[str], tmp_path: Path):
    """--passkey adds one llama-server run per pair: stored with every trial's answer and
    margin, shown as found/tried per prompt length with the smallest margin, skipped when the
    sweep runs again."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [*tiny[: tiny.index("--cache")], "--cache", "q8_0/q8_0", "--ctx", "128", "--chunks",
            "1", "--depths", "", "--threads", "2", "--passkey", "512", "--passkey-depths",
            "0.2,0.8", "--out", str(out)]
    proc = tqllama_cli(args, cache)
    table, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err
    records = [r for r in Store(out).load().values() if r.kind == "passkey"]
    assert len(records) == 1
    passkey = records[0].passkey
    assert passkey["tried"] == 2 and passkey["by_length"] == {"512": [passkey["found"], 2]}
    assert {(t["length"], t["depth"]) for t in passkey["trials"]} == {(512, 0.2), (512, 0.8)}
    assert all(t["answer"] for t in passkey["trials"])
    header = next(line for line in table.splitlines() if line.startswith("| K/V"))
    assert "passkey 512" in header
    row = next(line for line in table.splitlines() if line.startswith("| q8_0/q8_0"))
    margin = passkey["min_margin"]["512"]
    assert margin == min(t["margin"] for t in passkey["trials"] if t["margin"] is not None)
    assert f"| {passkey['found']}/2 ({margin:+.2f}) |" in row
    again = tqllama_cli(args, cache)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0 and "2 of 2 runs already stored" in err


def test_a_stopped_passkey_run_goes_on_from_its_last_finished_trial(tiny: list[str],
                                                                    tmp_path: Path):
    """A passkey run is many prefills (minutes each at 8K on a CPU): stopped midway, the
    sweep keeps the trials it finished and the rerun asks only the others."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [*tiny[: tiny.index("--cache")], "--cache", "q8_0/q8_0", "--ctx", "128", "--chunks",
            "1", "--depths", "", "--threads", "2", "--passkey", "512,1024", "--passkey-depths",
            "0.1,0.5,0.9", "--passkey-seed", "5", "--out", str(out)]
    proc = tqllama_cli(args, cache)
    assert proc.stderr is not None
    asked = []
    for line in proc.stderr:  # the progress lines, as they come
        if line.startswith("  key "):
            asked.append(line.split()[1])
            break
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err
    asked += [ln.split()[1] for ln in err.splitlines() if ln.startswith("  key ")]
    assert 1 <= len(asked) < 6
    assert [json.loads(line)["kind"] for line in _lines(out / "results.jsonl")] == ["base", "kld"]

    again = tqllama_cli(args, cache)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    # (the stop can fall between keeping a trial and saying so: count what was kept)
    kept = re.search(r"^(\d+) trials of this run already asked: going on$", err, re.M)
    assert kept is not None, err
    n = int(kept.group(1))
    assert 1 <= n < 6 and n in (len(asked), len(asked) + 1)
    rest = [ln.split()[1] for ln in err.splitlines() if ln.startswith("  key ")]
    assert len(rest) == 6 - n
    (record,) = [r for r in Store(out).load().values() if r.kind == "passkey"]
    assert record.passkey is not None and record.passkey["tried"] == 6
    keys = [t["key"] for t in record.passkey["trials"]]
    assert keys[:len(asked)] == asked and keys[n:] == rest
    assert record.params["passkey_seed"] == 5
    assert not list((out / "partial").glob("*"))  # the record replaced the kept trials
