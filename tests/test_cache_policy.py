"""Cache policies (issue 21) in the patched tools, on SmolLM2 (30 layers, 3 KV heads of 64):
`tqllama tune` end to end, a policy's per-layer sizes in the KV size line and its quality,
the one-line refusals of llama-perplexity and llama-server, llama-bench's field, slot
restore into another policy, and the automatic protection of turbo keys, which SmolLM2 does
not need (the file format and the choice without llama.cpp: tests/test_policy.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tqlab.policies import SMOLLM2_ID, broken, write_policy
from tqlab.server import PROMPT, complete, post, server, server_process
from tqlab.tools import perplexity, run
from tqllama import assets
from tqllama.errors import TqError
from tqllama.ggufinfo import read_gguf
from tqllama.kvshape import model_shape
from tqllama.plan import Settings, make_plan, parse_pair
from tqllama.policy import auto_protected, read

pytestmark = pytest.mark.slow

N_LAYER, KV_WIDTH = 30, 3 * 64
BYTES_PER_64 = {"turbo3": 26, "turbo4": 34, "q8_0": 68, "f16": 128}
TURBO4 = ("-ctk", "turbo4", "-ctv", "turbo4")
CTX, CHUNKS = 512, 2  # the quality check's f16 base (conftest's base_logits)


def tune(built_tools, model: Path, text: Path, directory: Path, bits: str,
         ) -> subprocess.CompletedProcess[str]:
    """`tqllama tune` measured on one chunk of 128 tokens (the test's budget of time; the
    documented runs use 512), with its own cache of measurements in `directory`."""
    bin_dir = Path(built_tools.binaries["llama-perplexity"]).parent
    cmd = [sys.executable, "-c", "from tqllama.cli import main; main()", "tune", str(model),
           "--text", str(text), "--bits", bits, "--eval-ctx", "128", "--bin-dir", str(bin_dir),
           "--threads", "2", "-o", str(directory / f"{bits}.policy")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "TQLLAMA_CACHE": str(directory / "cache")})


@pytest.fixture(scope="module")
def tuned(built_tools, model: Path, text: Path, tmp_path_factory: pytest.TempPathFactory,
          ) -> tuple[Path, str]:
    """A policy at 4.6 bits per value, and the table tune printed."""
    directory = tmp_path_factory.mktemp("tune")
    proc = tune(built_tools, model, text, directory, "4.6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[61/61] layer 29 V" in proc.stderr  # the progress: q8_0 base, then K and V per layer
    return directory / "4.6.policy", proc.stdout


def test_tune_writes_a_policy_within_the_budget(model: Path, tuned: tuple[Path, str]) -> None:
    path, table = tuned
    policy = read(path)
    assert policy.model == SMOLLM2_ID and len(policy.k) == len(policy.v) == N_LAYER
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert [int(r.split("|")[1]) for r in rows] == list(range(N_LAYER))
    assert [(r.split("|")[2].strip(), r.split("|")[3].strip()) for r in rows] == list(
        zip(policy.k, policy.v, strict=True))
    # the budget is spent: some cache above turbo4, and the mean within 4.6 bits
    assert "q8_0" in policy.k + policy.v
    assert policy.bits_per_value(model_shape(read_gguf(model))) <= 4.6 + 1e-9


def test_tune_for_another_budget_reuses_its_measurements(built_tools, model: Path, text: Path,
                                                        tuned: tuple[Path, str]) -> None:
    proc = tune(built_tools, model, text, tuned[0].parent, "3.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "layer 0 K" not in proc.stderr  # nothing run again
    policy = read(tuned[0].parent / "3.5.policy")
    assert policy.bits_per_value(model_shape(read_gguf(model))) <= 3.5 + 1e-9
    assert policy != read(tuned[0])


def mib(parts: dict[str, int], cells: int) -> dict[str, float]:
    return {t: round(n * cells * KV_WIDTH // 64 * BYTES_PER_64[t] / 2**20, 2)
            for t, n in parts.items()}


def test_a_policy_sizes_each_layer_and_beats_turbo4(built_tools, model: Path, text: Path,
                                                    base_logits: Path,
                                                    tuned: tuple[Path, str]) -> None:
    """The KV size line lists every type's share, exact to llama.cpp's rounding; the tuned
    policy's KLD is below turbo4/turbo4's (it spends 0.35 bits more where they matter)."""
    policy = read(tuned[0])
    common = [built_tools.binaries["llama-perplexity"], "-m", str(model), "-f", str(text),
              "-c", str(CTX), "--chunks", str(CHUNKS), "--kl-divergence-base", str(base_logits),
              "--kl-divergence"]
    mixed, _ = perplexity(*common, *TURBO4, "--cache-policy", str(tuned[0]))
    plain, _ = perplexity(*common, *TURBO4)
    kv = mixed.kv_cache
    cells = kv.cells * kv.streams
    for parts, types in ((kv.k_parts, policy.k), (kv.v_parts, policy.v)):
        assert dict(parts) == mib({t: types.count(t) for t in set(types)}, cells)
    assert mixed.kld is not None and plain.kld is not None
    assert mixed.kld.kld_mean.value < plain.kld.kld_mean.value


@pytest.mark.parametrize("how", ["other model", "unknown type", "truncated"])
def test_a_bad_policy_is_one_line_from_the_tools(built_tools, model: Path, text: Path,
                                                 tmp_path: Path, how: str) -> None:
    path, message = broken(tmp_path, how)
    proc = run([built_tools.binaries["llama-perplexity"], "-m", str(model), "-f", str(text),
                "-c", "128", "--chunks", "1", *TURBO4, "--cache-policy", str(path)])
    assert proc.returncode != 0
    # one line per context llama-perplexity tries to create (its fitting probe, then the real one)
    lines = {ln.split(" E ", 1)[-1] for ln in proc.stderr.splitlines() if message in ln}
    assert len(lines) == 1, proc.stderr[-2000:]


@pytest.mark.parametrize("how", ["other model", "truncated"])
def test_the_server_refuses_to_start_with_a_bad_policy(built_tools, model: Path,
                                                       tmp_path: Path, how: str) -> None:
    path, message = broken(tmp_path, how)
    log = tmp_path / "server.log"
    with pytest.raises(TqError, match="exited with"), server_process(
            built_tools.binaries["llama-server"], model, log, "-c", "256", *TURBO4, "-fa", "on",
            "--cache-policy", str(path)):
        pass
    assert message in log.read_text()


def test_llama_bench_reports_its_policy(built_tools, model: Path, tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.policy", k={0: "q8_0", 29: "q8_0"})
    proc = run([built_tools.binaries["llama-bench"], "-m", str(model), "-p", "16", "-n", "4",
                "-r", "1", "-t", "2", "-fa", "1", *TURBO4, "--cache-policy", str(policy),
                "-o", "jsonl"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(rows) == 2 and {r["cache_policy"] for r in rows} == {str(policy)}


@pytest.mark.parametrize(("k", "v", "reason"), [
    # another set of q8_0 K layers: every layer of a turbo K cache has a key centre
    # (patch 0023), so the centres fit and the layer's type is refused
    ({0: "q8_0", 29: "q8_0"}, {}, "mismatched key type: the saved state has turbo4, this "
                                  "context q8_0 (layer 0)"),
    ({29: "q8_0"}, {5: "q8_0"}, "mismatched value type: the saved state has turbo4, this "
                                "context q8_0 (layer 5)"),
])
def test_slot_restore_into_another_policy_fails_clearly(built_tools, model: Path,
                                                        tmp_path: Path, k: dict[int, str],
                                                        v: dict[int, str], reason: str) -> None:
    """A slot saved under a policy restores under the same policy and is refused, with the
    layer that differs, under another one; the refused server goes on as before."""
    saved = write_policy(tmp_path / "saved.policy", k={29: "q8_0"})
    other = write_policy(tmp_path / "other.policy", k=k, v=v)
    args = ("-c", "1024", "-np", "1", "--slot-save-path", str(tmp_path), *TURBO4, "-fa", "on")
    with server(built_tools.binaries["llama-server"], model, tmp_path / "save.log", *args,
                "--cache-policy", str(saved)) as url:
        first = complete(url, prompt=PROMPT, n_predict=16, temperature=0, ignore_eos=True)
        status, out = post(f"{url}/slots/0?action=save", {"filename": "slot.bin"})
        assert status == 200, out
    with server(built_tools.binaries["llama-server"], model, tmp_path / "same.log", *args,
                "--cache-policy", str(saved)) as url:
        status, out = post(f"{url}/slots/0?action=restore", {"filename": "slot.bin"})
        assert status == 200 and out["n_restored"] > 0, out
    log = tmp_path / "other.log"
    with server(built_tools.binaries["llama-server"], model, log, *args,
                "--cache-policy", str(other)) as url:
        status, err = post(f"{url}/slots/0?action=restore", {"filename": "slot.bin"})
        after = complete(url, prompt=PROMPT, n_predict=16, temperature=0, ignore_eos=True)
    assert status == 400, err
    assert reason in log.read_text()
    assert after["content"] != "" and first["content"] != ""


def test_smollm2_needs_no_automatic_protection(built_tools, model: Path, text: Path) -> None:
    """Plain turbo4 keys on SmolLM2 stay turbo4 in every layer (its keys carry no bias that
    the protection looks for), and --cache-policy none changes nothing."""
    common = [built_tools.binaries["llama-perplexity"], "-m", str(model), "-f", str(text),
              "-c", "128", "--chunks", "1", *TURBO4]
    auto, log = perplexity(*common)
    none, _ = perplexity(*common, "--cache-policy", "none")
    assert "cache policy auto" not in log
    assert auto.kv_cache.k_parts == none.kv_cache.k_parts and len(auto.kv_cache.k_parts) == 1
    assert auto.final_ppl == none.final_ppl


def test_qwen_keeps_the_keys_of_its_biased_layer_in_q8_0(built_tools, text: Path) -> None:
    """Qwen2.5-Coder-0.5B's layer 0 keys are nearly all bias (tqllama tune: a turbo4 K there
    alone costs 0.087 KLD, every other layer's 0.004 or less): plain turbo4 keeps them in q8_0
    and says so in one line; --cache-policy none gives every layer turbo4. The q8_0 layer's
    keys are centred like the turbo ones (patch 0023): uncentred, that layer made plain turbo4
    worse than none (c=512, 8 chunks: 0.0293 against 0.0234; centred 0.0226)."""
    qwen = assets.fetch_model("qwen2.5-coder-0.5b")
    common = [built_tools.binaries["llama-perplexity"], "-m", str(qwen), "-f", str(text),
              "-c", "128", "--chunks", "1", *TURBO4]
    auto, log = perplexity(*common)
    (line,) = [ln for ln in log.splitlines() if "cache policy auto" in ln]
    assert "K of layer 0 at q8_0" in line and "--cache-policy none" in line
    assert [t for t, _ in auto.kv_cache.k_parts] == ["turbo4", "q8_0"]
    assert [t for t, _ in auto.kv_cache.v_parts] == ["turbo4"]
    assert "turbo key centring on in 24 layers" in log
    none, log = perplexity(*common, "--cache-policy", "none")
    assert "cache policy auto" not in log
    assert [t for t, _ in none.kv_cache.k_parts] == ["turbo4"]
    assert "turbo key centring on in 24 layers" in log
    # a cache whose K is not turbo stays as upstream has it, its q8_0 keys uncentred
    _, log = perplexity(*common[:-4], "-ctk", "q8_0", "-ctv", "turbo4")
    assert "turbo key centring on" not in log
    # tqllama plan mirrors the rule from the file's weights, to the byte
    gguf = read_gguf(qwen)
    assert auto_protected(gguf, "turbo4") == (0,)
    streams = auto.kv_cache.streams  # llama-perplexity runs n_batch / c sequences, a stream each
    plan = make_plan(model_shape(gguf), qwen.name, [128 * streams], [parse_pair("turbo4")],
                     Settings(n_seq=streams), None, protected=auto_protected(gguf, "turbo4"))
    assert round(plan.pairs[0].sizes[0].total_bytes / 2**20, 2) == auto.kv_cache.total_mib
