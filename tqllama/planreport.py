"""A plan as a Markdown report or as JSON."""

from __future__ import annotations

import json
from typing import Any

from tqllama.plan import MAX_CTX, Plan

MIB = 1024 * 1024


def _mib(n: int) -> str:
    return f"{n / MIB:,.2f}"


def _values(xs: set[int]) -> str:
    return "/".join(str(x) for x in sorted(xs))


def _describe(plan: Plan) -> list[str]:
    s = plan.shape
    cached = [la for la in s.layers if la.cached]
    lines = [
        f"{s.arch}, {len(s.layers)} layers ({len(cached)} with their own KV cache), "
        f"{s.n_head} heads, {_values({la.n_head_kv for la in cached})} KV heads, "
        f"head size K {_values({la.head_k for la in cached})} / "
        f"V {_values({la.head_v for la in cached})}"
        + (", MLA (K-only cache)" if s.mla else "")
        + (f", trained context {s.n_ctx_train}" if s.n_ctx_train else ""),
    ]
    n_swa_layers = sum(la.swa for la in cached)
    if s.n_swa:
        lines.append(
            f"{s.swa_kind} window {s.n_swa} on {n_swa_layers} of {len(cached)} cached layers: "
            "they keep " + ("the full context (--swa-full)" if plan.settings.swa_full else
                            "pad256(min(context, window + ubatch)) cells")
        )
    st = plan.settings
    seqs = f"{st.n_seq} sequence" + ("s" if st.n_seq > 1 else "")
    if st.n_seq > 1:
        seqs += ", one unified cache" if st.unified else ", one cache stream each"
    lines.append(f"weights {_mib(s.weight_bytes)} MiB; {seqs}; ubatch {st.n_ubatch}; "
                 "flash attention on or auto")
    return lines


def to_markdown(plan: Plan, memory_text: str | None) -> str:
    lines = _describe(plan)
    lines[0] = f"**{plan.model_name}**: {lines[0]}"
    out = [line + "  " for line in lines]
    out += ["", "KV cache in MiB (K + V) at each context (-c):", ""]
    header = ["K/V", *(str(c) for c in plan.contexts)]
    if plan.budget is not None:
        header.append(f"longest -c in {memory_text}")
    out.append("| " + " | ".join(header) + " |")
    out.append("|---" + "|---:" * (len(header) - 1) + "|")
    notes = []
    for p in plan.pairs:
        label = p.label
        if p.problem:
            cells = ["unsupported"] * len(p.sizes)
            notes.append(f"- {label}: llama.cpp refuses it: {p.problem}")
        else:
            cells = [_mib(sz.total_bytes) for sz in p.sizes]
        if p.protected:
            notes.append(f"- {label}: the K of layer{'s' if len(p.protected) > 1 else ''} "
                         f"{', '.join(map(str, p.protected))} in q8_0 (this model's keys need "
                         "it there: the automatic protection of turbo keys; --cache-policy "
                         "none drops it)")
        if plan.budget is not None:
            if p.fit_ctx is None:
                cells.append("-")
            elif p.fit_ctx >= MAX_CTX:
                cells.append(f">= {MAX_CTX:,}")
            else:
                cells.append(f"{p.fit_ctx:,}" if p.fit_ctx else "none")
        out.append("| " + " | ".join([label, *cells]) + " |")
    if notes:
        out += ["", *notes]
    if plan.budget is not None:
        out += ["", f"Longest -c: the largest multiple of 256 with weights + KV cache <= "
                f"{memory_text} ({plan.budget:,} bytes). Compute buffers, the output buffer "
                "and the rest of the process are not counted: leave headroom."]
        trained = plan.shape.n_ctx_train
        if trained and any(p.fit_ctx and p.fit_ctx > trained for p in plan.pairs):
            out.append(f"Beyond the trained context ({trained:,}) the model needs RoPE "
                       "scaling and loses quality.")
    return "\n".join(out) + "\n"


def to_json(plan: Plan) -> str:
    s = plan.shape
    cached = [la for la in s.layers if la.cached]
    doc: dict[str, Any] = {
        "model": plan.model_name,
        "arch": s.arch,
        "layers": len(s.layers),
        "cached_layers": len(cached),
        "n_head": s.n_head,
        "n_head_kv": sorted({la.n_head_kv for la in cached}),
        "head_k": sorted({la.head_k for la in cached}),
        "head_v": sorted({la.head_v for la in cached}),
        "mla": s.mla,
        "sliding_window": s.n_swa,
        "swa_layers": sum(la.swa for la in cached),
        "n_ctx_train": s.n_ctx_train,
        "weight_bytes": s.weight_bytes,
        "settings": {
            "parallel": plan.settings.n_seq,
            "kv_unified": plan.settings.unified,
            "ubatch": plan.settings.n_ubatch,
            "swa_full": plan.settings.swa_full,
            "flash_attn": "on or auto",
        },
        "memory_bytes": plan.budget,
        "pairs": [
            {
                "k": p.type_k.name,
                "v": p.type_v.name,
                "policy": p.policy,
                "q8_0_k_layers": list(p.protected),
                "unsupported": p.problem,
                "longest_ctx": p.fit_ctx,
                "sizes": [
                    {
                        "ctx": sz.ctx,
                        "cells": sz.cells,
                        "swa_cells": sz.swa_cells,
                        "k_bytes": sz.k_bytes,
                        "v_bytes": sz.v_bytes,
                        "total_bytes": sz.total_bytes,
                        "total_mib": round(sz.total_bytes / MIB, 2),
                    }
                    for sz in p.sizes
                ],
            }
            for p in plan.pairs
        ],
    }
    return json.dumps(doc, indent=2) + "\n"
