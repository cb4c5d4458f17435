#!/usr/bin/env python3
"""Dumps real K and V cache rows of a llama-architecture GGUF (SmolLM2-135M by default).

Usage: PYTHONPATH=. python scripts/dump_kv.py MODEL.gguf [--text wiki.test.raw] [--tokens 512]
       [--out PATH]

Tokenizes the start of the text with the GGUF's own BPE vocabulary
(tqlab/bpe.py), runs the NumPy forward pass of tqlab/llama_forward.py,
and writes post-RoPE K and V of every layer to an .npz in the cache
($TQLLAMA_CACHE/kv/<model>-<tokens>.npz unless --out): arrays tokens (T,),
k and v (layers, T, kv_heads, head_dim), nll (T-1,). Prints the perplexity of the pass
as a sanity check. Never commit the output.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tqlab.llama_forward import collect_kv, kv_cache_path, save
from tqllama.assets import fetch_text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--text", type=Path, default=None, help="default: wikitext-2 test")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    start = time.time()
    dump = collect_kv(args.model, args.text or fetch_text(), args.tokens)
    out = args.out or kv_cache_path(args.model, args.tokens)
    save(dump, out)
    print(
        f"{len(dump.tokens)} tokens, {dump.k.shape[0]} layers, "
        f"PPL {np.exp(dump.nll.mean()):.2f} ({time.time() - start:.0f} s) -> {out}"
    )


if __name__ == "__main__":
    main()
