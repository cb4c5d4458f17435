"""`tqllama plan`: KV-cache size per cache-type pair and context, and what fits in memory."""

from __future__ import annotations

from pathlib import Path

import click

from tqllama import plan as planmod
from tqllama.ggufinfo import read_gguf
from tqllama.kvshape import model_shape
from tqllama.planreport import to_json, to_markdown
from tqllama.policy import auto_protected
from tqllama.policy import read as read_policy


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--ctx", "ctx_text", metavar="N[,N...]",
              help="Context sizes (-c), e.g. 32768,131072 or 32k,128k. "
                   "Default: 4096, 32768, 131072 and the model's training context.")
@click.option("--memory", "memory_text", metavar="SIZE",
              help="Memory for weights + KV cache, e.g. 36GB (10^9), 36GiB or 36G (2^30); "
                   "adds the longest context that fits.")
@click.option("--parallel", "n_seq", type=int, default=1, show_default=True,
              help="Parallel sequences (-np): each gets its own cache stream.")
@click.option("--kv-unified", is_flag=True, help="One cache stream shared by all sequences (-kvu).")
@click.option("--ubatch", type=int, default=512, show_default=True,
              help="Physical batch (-ub, with -b at least as large); sizes sliding-window "
                   "layers.")
@click.option("--swa-full", is_flag=True, help="Sliding-window layers keep the full context.")
@click.option("--cache", "cache_pairs", multiple=True, metavar="K/V",
              help="A K/V cache-type pair, e.g. turbo4/turbo3 (repeatable). "
                   "Default: f16, q8_0, q4_0, turbo4, turbo4/turbo3, turbo3, turbo2.")
@click.option("--cache-policy", "policies", multiple=True, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="A cache policy made by tqllama tune for MODEL (repeatable): sized layer by "
                   "layer, after the pairs.")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md",
              show_default=True)
def plan(model: Path, ctx_text: str | None, memory_text: str | None, n_seq: int,
         kv_unified: bool, ubatch: int, swa_full: bool, cache_pairs: tuple[str, ...],
         policies: tuple[Path, ...], fmt: str) -> None:
    """KV-cache size of MODEL (a GGUF file) for each cache pair and context.

    Sizes are what the pinned llama.cpp allocates (its `llama_kv_cache: size = ...` line),
    with flash attention on or auto.
    """
    gguf = read_gguf(model)
    shape = model_shape(gguf)
    loaded = []
    for path in policies:
        policy = read_policy(path)
        policy.check_model(gguf, path)
        loaded.append((path.name, policy))
    contexts = planmod.parse_ctx_list(ctx_text) if ctx_text else planmod.default_contexts(shape)
    pairs = [planmod.parse_pair(p) for p in cache_pairs or planmod.DEFAULT_PAIRS]
    budget = planmod.parse_memory(memory_text) if memory_text is not None else None
    settings = planmod.Settings(n_seq=n_seq, unified=kv_unified, n_ubatch=ubatch,
                                swa_full=swa_full)
    protected = auto_protected(gguf, "turbo4") if any(k.turbo for k, _ in pairs) else ()
    result = planmod.make_plan(shape, model.name, contexts, pairs, settings, budget, loaded,
                               protected)
    click.echo(to_json(result) if fmt == "json" else to_markdown(result, memory_text), nl=False)


commands = [plan]
