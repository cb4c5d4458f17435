#!/usr/bin/env python3
"""The passkey check of `tqllama bench sweep --passkey`, teacher-forced in the NumPy forward
pass with simulated cache treatments (tqlab/cache_sim.py): how sure the model stays of the
key's tokens, where greedy decoding through llama-server says only found or lost.

Usage: PYTHONPATH=. python scripts/passkey_sim.py MODEL --length 8192 --depth 0.1
       --key 65125 TREATMENT [TREATMENT ...]

The prompt is the sweep's (tqllama.bench.retrieval: filler, the key's sentence at DEPTH of
a 2048-token prompt, the question), tokenized with the GGUF's vocab; `k=f32` alone is the
exact cache. Prints per treatment the log-probability of each of the key's tokens and its
margin over the likeliest other token: a margin below 0 is a token greedy decoding misses.
SmolLM2 at 8192 tokens: about 6 minutes a treatment on one core.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tqlab.bpe import BpeTokenizer
from tqlab.cache_sim import Treatment, answer_log_probs
from tqlab.llama_forward import LlamaGguf
from tqllama.assets import resolve_model
from tqllama.bench.retrieval import FILLER, NEEDLE, QUESTION, Trial, prompt_tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("treatments", nargs="+")
    ap.add_argument("--length", type=int, default=8192)
    ap.add_argument("--depth", type=float, default=0.1)
    ap.add_argument("--key", default="65125")
    ap.add_argument("--shortest", type=int, default=2048, help="the prompt the depth is of")
    args = ap.parse_args()

    treatments = [Treatment.parse(t) for t in args.treatments]
    model = LlamaGguf(resolve_model(args.model))
    tok = BpeTokenizer.from_gguf(model.reader)
    filler = tok.encode(FILLER)
    hay = filler * (args.length // len(filler) + 1)
    trial = Trial(args.length, args.depth, args.key, args.shortest)
    prompt, at = prompt_tokens(hay, trial, tok.encode(NEEDLE.format(key=args.key)),
                               tok.encode(QUESTION))
    answer = tok.encode(" " + args.key)
    print(f"{len(prompt)}-token prompt, the key's sentence at token {at}", flush=True)
    start = time.time()
    for t, logp, margin in answer_log_probs(model, prompt, answer, treatments):
        print(f"{t.spec():<36} log p {logp.sum():7.3f}  per token {np.round(logp, 2).tolist()}"
              f"  margins {np.round(margin, 2).tolist()}", flush=True)
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
