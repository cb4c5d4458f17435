"""`tqllama plan` against the KV size llama.cpp itself reports.

llama-perplexity creates its context (and logs `llama_kv_cache: size = ...` once per
cache: two lines for sliding-window models) before it reads the text; a text too short
to score makes it stop right there, so each case costs one model load. The bar is 1%;
the plan is expected to match to the logged 0.01 MiB, cell counts included.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tqlab.synth import write_model
from tqllama.build import Manifest
from tqllama.ggufinfo import read_gguf
from tqllama.kvshape import model_shape
from tqllama.plan import Settings, kv_size, unsupported
from tqllama.types import cache_type

pytestmark = pytest.mark.slow

KV_LINE = re.compile(
    r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers, +(\d+)/(\d+) seqs\), "
    r"K \((\w+)\): +([\d.]+) MiB, V \((\w+)\): +([\d.]+) MiB"
)
MIB = 1024 * 1024

SYNTH = {
    # write_model() arguments; every cache is >= 1 MiB at -c 512, so the logged two
    # decimals resolve 0.5% or better
    "gqa-head128": dict(n_embd=256, n_head=4, n_head_kv=2, head_dim=128, n_layer=4),
    "head256": dict(n_embd=256, n_head=2, n_head_kv=1, head_dim=256, n_layer=4),
    "swa-gemma3": dict(arch="gemma3", n_embd=256, n_head=8, n_head_kv=4, head_dim=64,
                       n_layer=4, sliding_window=300, swa_pattern=2),
    "mla-deepseek2": dict(arch="deepseek2", n_embd=256, n_head=4, head_dim=64, n_layer=6,
                          kv_lora_rank=256, rope_dim=64),
}
PAIRS = [("f16", "f16"), ("q8_0", "q8_0"), ("q4_0", "q4_0"), ("turbo4", "turbo4"),
         ("turbo4", "turbo3"), ("turbo3", "turbo3"), ("turbo2", "turbo2"),
         ("turbo4_qjl", "turbo4"), ("turbo3_qjl", "turbo3"), ("turbo2_qjl", "turbo2")]


@dataclass(frozen=True)
class Logged:
    cells: tuple[int, ...]  # per cache (base, then SWA)
    mib: float  # sum of the size lines' totals


def run_logged(cmd: list[str], marker: str) -> str:
    """stderr of `cmd` once it holds `marker`, its last log line before exiting.

    llama.cpp logs from a worker thread that nobody joins at exit, so the last lines are
    sometimes lost (on busy cores three runs in a row lost them); the lines before `marker`
    were flushed if `marker` made it out.
    """
    for _ in range(10):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if marker in proc.stderr:
            return proc.stderr
    tail = "\n".join(proc.stderr.splitlines()[-15:])
    raise AssertionError(f"no {marker!r} from {' '.join(cmd)} (exit {proc.returncode}):\n{tail}")


def llama_kv(binary: Path, model: Path, ctx: int, type_k: str, type_v: str,
             text: Path, unified: bool = False) -> Logged:
    """The KV cache llama-perplexity allocates for `-c ctx` (flash attention on)."""
    cmd = [str(binary), "-m", str(model), "-f", str(text), "-c", str(ctx), "--chunks", "1",
           "-fa", "on", "-ctk", type_k, "-ctv", type_v, "-t", "2",
           # llama.cpp's info lines need verbosity 4; no fitting pass, whose probe
           # context would log a second set of size lines
           "-lv", "4", "-fit", "off", *(["-kvu"] if unified else [])]
    # the scheduler reserves its compute buffers after every cache exists
    lines = KV_LINE.findall(run_logged(cmd, "compute buffer size"))
    assert lines, f"no KV size line from {' '.join(cmd)}"
    return Logged(tuple(int(m[1]) for m in lines), sum(float(m[0]) for m in lines))


def perplexity_settings(ctx: int, unified: bool) -> tuple[int, Settings]:
    """llama-perplexity's context: n_parallel = max(1, n_batch / ctx), n_ctx = n_parallel * ctx."""
    n_seq = max(1, 2048 // ctx)
    return n_seq * ctx, Settings(n_seq=n_seq, unified=unified)


def planned(model: Path, ctx: int, type_k: str, type_v: str,
            unified: bool = False) -> tuple[tuple[int, ...], float]:
    shape = model_shape(read_gguf(model))
    n_ctx, settings = perplexity_settings(ctx, unified)
    size = kv_size(shape, cache_type(type_k), cache_type(type_v), n_ctx, settings)
    cells = (size.cells, size.swa_cells) if shape.n_swa else (size.cells,)
    return cells, size.total_bytes / MIB


@pytest.fixture(scope="session")
def perplexity(built_tools: Manifest) -> Path:
    """The patched build's llama-perplexity: it also serves f16, q8_0 and q4_0."""
    return Path(built_tools.binaries["llama-perplexity"])


@pytest.fixture(scope="session")
def offered_types(perplexity: Path) -> set[str]:
    """The -ctk names this build accepts, from its --help ("allowed values: f32, ...")."""
    out = subprocess.run([str(perplexity), "--help"], capture_output=True, text=True).stdout
    m = re.search(r"--cache-type-k TYPE.*?allowed values: (.*?)\n\s*\(default", out, re.S)
    assert m, "llama-perplexity --help lists no cache types"
    return {name.strip() for name in m.group(1).split(",")}


def require(offered: set[str], *names: str) -> None:
    missing = [n for n in names if n not in offered]
    if missing:
        pytest.skip(f"this build's -ctk/-ctv do not offer {', '.join(missing)} yet "
                    "(patches/ must add them to common/arg.cpp kv_cache_types)")


@pytest.fixture(scope="session")
def short_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "short.txt"
    path.write_text("Too short to score: perplexity stops after creating its context.\n")
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tqllama.assets import fetch_model

    root = tmp_path_factory.mktemp("models")
    out = {name: write_model(root / f"{name}.gguf", **kw) for name, kw in SYNTH.items()}
    out["smollm2"] = fetch_model("smollm2-135m")
    return out


def pairs_for(name: str) -> list[tuple[str, str]]:
    # MLA caches K only and llama.cpp requires equal K and V types for it
    return [(k, v) for k, v in PAIRS if name != "mla-deepseek2" or k == v]


CASES = [(name, ctx, k, v) for name in ("smollm2", *SYNTH) for ctx in (512, 4096)
         for k, v in pairs_for(name)]


@pytest.mark.parametrize(("name", "ctx", "type_k", "type_v"), CASES)
def test_plan_matches_llama_cpp(perplexity: Path, offered_types: set[str],
                                models: dict[str, Path], short_text: Path,
                                name: str, ctx: int, type_k: str, type_v: str) -> None:
    require(offered_types, type_k, type_v)
    model = models[name]
    logged = llama_kv(perplexity, model, ctx, type_k, type_v, short_text)
    cells, mib = planned(model, ctx, type_k, type_v)
    assert logged.cells == cells
    assert mib == pytest.approx(logged.mib, rel=0.01)
    assert abs(mib - logged.mib) <= 0.005 * len(cells) + 1e-9


@pytest.mark.parametrize("name", ["gqa-head128", "swa-gemma3"])
@pytest.mark.parametrize("pair", ["f16/f16", "q8_0/q8_0", "turbo4/turbo3"])
def test_unified_cache_matches_llama_cpp(perplexity: Path, models: dict[str, Path],
                                         short_text: Path, name: str, pair: str) -> None:
    # -c 512: four sequences in one stream; the window grows to 4 x 300 + 512
    type_k, type_v = pair.split("/")
    logged = llama_kv(perplexity, models[name], 512, type_k, type_v, short_text, unified=True)
    cells, mib = planned(models[name], 512, type_k, type_v, unified=True)
    assert logged.cells == cells
    assert mib == pytest.approx(logged.mib, rel=0.01)


@pytest.mark.parametrize("type_k", ["turbo4", "q8_0"])
def test_refused_head_size_is_refused_by_llama_cpp(perplexity: Path, short_text: Path,
                                                   tmp_path: Path, type_k: str) -> None:
    # head 80: neither 64 (turbo) nor 32 (q8_0) divides it; the plan flags both pairs
    model = write_model(tmp_path / "head80.gguf", n_embd=320, n_head=4, head_dim=80)
    assert unsupported(model_shape(read_gguf(model)), cache_type(type_k), cache_type("f16"))
    cmd = [str(perplexity), "-m", str(model), "-f", str(short_text), "-c", "512",
           "-fa", "on", "-ctk", type_k, "-ctv", "f16"]
    stderr = run_logged(cmd, "failed to create context")
    # upstream's block-size check, or the patched build's own turbo head-size check
    assert re.search(r"does not divide n_embd_head_k=80|head size 80 is not supported", stderr)
