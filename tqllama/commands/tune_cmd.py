"""`tqllama tune`: a per-layer cache policy for one model, within a budget."""

from __future__ import annotations

from pathlib import Path

import click

from tqllama import assets
from tqllama.bench.progress import Progress
from tqllama.bench.sweep import SweepSettings, tool_path
from tqllama.plan import parse_memory
from tqllama.tune import DEFAULT_TYPES, PROBE, plot, table, tune


@click.command("tune")
@click.argument("model")
@click.option("--text", help="calibration text (default: $TQLLAMA_TEXT, else WikiText-2 test)")
@click.option("--bits", type=float, help="budget: mean bits per cached value, K and V together")
@click.option("--memory", help="budget: KV cache size, e.g. 512MiB (a plain number: MiB), "
              "with --ctx")
@click.option("--ctx", type=int, help="the context --memory must hold (-c)")
@click.option("--types", default=",".join(DEFAULT_TYPES), show_default=True,
              help="the types a layer's K or V may get; add turbo5 for the best policies "
                   "(its GPU kernels have not yet run on a GPU)")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="the policy file to write")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="also draw the layers' sensitivity and the chosen types (PNG)")
@click.option("--eval-ctx", type=int, default=512, show_default=True,
              help="context of the measuring runs")
@click.option("--chunks", type=int, default=1, show_default=True,
              help="chunks of text each measuring run scores")
@click.option("--threads", type=int, default=SweepSettings().threads, show_default=True)
@click.option("--bin-dir", type=click.Path(file_okay=False, path_type=Path),
              help="run the llama-perplexity in DIR instead of tqllama's build")
def tune_cmd(model: str, text: str | None, bits: float | None, memory: str | None,
             ctx: int | None, types: str, out: Path, plot_path: Path | None, eval_ctx: int,
             chunks: int, threads: int, bin_dir: Path | None) -> None:
    """Measure each layer's K and V sensitivity on MODEL (a .gguf path or alias) and write a
    policy: per-layer cache types that minimise the expected KLD within the budget.

    Use it with `--cache-policy FILE` in llama-server, llama-cli, llama-perplexity and
    llama-bench, `tqllama plan --cache-policy FILE`, or a sweep pair `K/V@tuned:FILE`.
    """
    memory_bytes = None
    if memory is not None:
        memory_bytes = parse_memory(memory if not memory.strip().isdigit() else f"{memory}MiB")
    perplexity = tool_path("llama-perplexity", SweepSettings(bin_dir=bin_dir))
    model_path, text_path = assets.resolve_model(model), assets.resolve_text(text)
    sensitivity, choice = tune(perplexity, model_path, text_path, out,
                               types=[t.strip() for t in types.split(",") if t.strip()],
                               bits=bits, memory_bytes=memory_bytes, ctx=ctx, eval_ctx=eval_ctx,
                               chunks=chunks, threads=threads, progress=Progress())
    click.echo(table(sensitivity, choice, PROBE), nl=False)
    if plot_path is not None:
        click.echo(f"plot: {plot(sensitivity, choice, plot_path, PROBE)}", err=True)
    click.echo(f"policy: {out}", err=True)


commands = [tune_cmd]
