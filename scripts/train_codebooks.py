#!/usr/bin/env python3
"""Trains the turbo int8 codebooks and search windows, and prints them as the literals
of tqllama/quant/tables.py with their measured MSE.

Usage: python scripts/train_codebooks.py [--bits 4,3,2,1] [--blocks 20000] [--width 9]
       [--validate 200000]

Fixed seeds: the same command prints the same tables. The committed tables.py is the
source of truth; this script only proposes values (copy them by hand, then run
scripts/gen_tables.py).
"""

from __future__ import annotations

import argparse
import time

from tqllama.quant.codebook import codebook_mse, train_codebook, training_blocks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", default="4,3,2,1")
    ap.add_argument("--blocks", type=int, default=20_000)
    ap.add_argument("--width", type=int, default=9)
    ap.add_argument("--validate", type=int, default=200_000, help="held-out rows of 64")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    held_out = {
        "unit": training_blocks(args.validate, seed=1001, log_std=False),
        "log-std": training_blocks(args.validate, seed=1002),
    }
    values: dict[int, tuple[int, ...]] = {}
    search: dict[int, tuple[int, int]] = {}
    for bits in (int(b) for b in args.bits.split(",")):
        start = time.time()
        log: list[str] = []
        cb = train_codebook(bits, n_blocks=args.blocks, width=args.width, log=log)
        if args.verbose:
            print("\n".join(log))
        measured = ", ".join(
            f"{name} {codebook_mse(cb.values, cb.search, x):.5f}" for name, x in held_out.items()
        )
        print(
            f"# {bits} bits: train {cb.train_mse:.5f}; held-out {args.validate} rows: {measured}"
            f" ({time.time() - start:.0f} s)"
        )
        values[bits], search[bits] = cb.values, cb.search

    print("KVALUES = {")
    for bits, v in values.items():
        print(f"    {bits}: {v},")
    print("}")
    print("SEARCH = {")
    for bits, w in search.items():
        print(f"    {bits}: {w},")
    print("}")


if __name__ == "__main__":
    main()
