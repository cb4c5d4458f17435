"""`tqllama bench sweep|table|plot|clean`, `tqllama model fetch`, `tqllama data fetch`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tqllama import assets
from tqllama.backends import BACKENDS
from tqllama.bench import base_logits, table
from tqllama.bench.presets import PRESETS
from tqllama.bench.progress import Progress
from tqllama.bench.store import Store
from tqllama.bench.sweep import (
    DEFAULT_OUT,
    SweepSettings,
    prepare,
    settings_from,
)
from tqllama.cachepair import CachePair
from tqllama.errors import TqError

_DEFAULTS = SweepSettings()


def _default(name: str) -> str:
    value = getattr(_DEFAULTS, name)
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _pair(_ctx: click.Context, _param: click.Parameter, value: str | None) -> CachePair | None:
    return CachePair.parse(value) if value else None


@click.group()
def bench() -> None:
    """Measure KV-cache types: quality (KLD vs f16) and speed (llama-bench)."""


@bench.command()
@click.option("--model", help="a .gguf path or alias (default: smollm2-135m, fetched on use)")
@click.option("--text", help="evaluation text (default: $TQLLAMA_TEXT, else WikiText-2 test)")
@click.option("--cache", "caches", multiple=True, metavar="K/V",
              help="a K/V cache pair, e.g. q8_0/turbo3, or with N boundary layers at each end "
                   "in q8_0: turbo2/turbo2@b2; repeat for more")
@click.option("--preset", type=click.Choice(sorted(PRESETS)),
              help="a named set of pairs (default when no --cache: default)")
@click.option("--ctx", type=int, help=f"llama-perplexity context [{_default('ctx')}]")
@click.option("--chunks", type=int, help=f"chunks of text scored [{_default('chunks')}]")
@click.option("--depths", help=f"llama-bench KV depths [{_default('depths')}]")
@click.option("--threads", type=int, help="threads for both tools [all cores]")
@click.option("--backend", type=click.Choice(BACKENDS), help="which build to run [cpu]")
@click.option("--bin-dir", type=click.Path(file_okay=False, path_type=Path),
              help="run the tools of any llama.cpp build in DIR instead of tqllama's own")
@click.option("--n-prompt", type=int, help=f"llama-bench -p [{_default('n_prompt')}]")
@click.option("--n-gen", type=int, help=f"llama-bench -n [{_default('n_gen')}]")
@click.option("--reps", type=int, help=f"llama-bench -r [{_default('reps')}]")
@click.option("--passkey", help="passkey retrieval at depth (llama-server): the contexts the "
              "trials fill, in tokens, e.g. 2048,8192 [none; preset long: 2048,4096,8192]")
@click.option("--passkey-depths", help="where each key sits, as fractions of the shortest "
              f"context's prompt; one key (one prefill) each [{_default('passkey_depths')}; "
              "preset long: 0.5]")
@click.option("--passkey-keys", type=int,
              help=f"keys per depth, each asked at every length [{_default('passkey_keys')}]")
@click.option("--passkey-seed", type=int,
              help="draw other key numbers (more keys beside a stored run's) "
                   f"[{_default('passkey_seed')}]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help=f"results directory [./{DEFAULT_OUT}]")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="a TOML sweep file (same keys as these options); options override it")
@click.option("--force", is_flag=True, help="rerun runs that are already stored")
@click.option("--keep-going", is_flag=True, help="go on with the other runs when one fails")
def sweep(caches: tuple[str, ...], preset: str | None, depths: str | None,
          passkey: str | None, passkey_depths: str | None, config: Path | None,
          **options: Any) -> None:
    """Run the f16 base, then KLD, passkey and speed runs for every K/V pair; print the table.

    Every finished run is stored at once in --out; run the same command again to resume.
    """
    settings = settings_from(config, caches, preset, depths=depths, passkey=passkey,
                             passkey_depths=passkey_depths, **options)
    run = prepare(settings, Progress())
    try:
        records = run.execute()
    except KeyboardInterrupt:
        kept = len(run.store.load())
        raise TqError(f"interrupted: {kept} finished runs are kept in {run.store.root}; "
                      "run the same command again to resume") from None
    baseline = table.DEFAULT_BASELINE if table.DEFAULT_BASELINE in run.settings.pairs else None
    click.echo(table.render(records, "md", baseline), nl=False)
    click.echo(f"results: {run.store.results}", err=True)
    for note in run.skipped:  # said at the start too; repeated where the table ends
        click.echo(note, err=True)
    if run.failures:
        raise TqError(f"{len(run.failures)} runs failed (first: {run.failures[0]}); fix and "
                      "rerun to fill them in")


@bench.command("table")
@click.argument("results", type=click.Path(path_type=Path), default=DEFAULT_OUT)
@click.option("--format", "fmt", type=click.Choice(table.FORMATS), default="md",
              show_default=True)
@click.option("--baseline", callback=_pair, default=table.DEFAULT_BASELINE.label,
              show_default=True, metavar="K/V", help="the pair speed ratios are relative to")
def table_cmd(results: Path, fmt: str, baseline: CachePair) -> None:
    """Print the comparison table of a sweep's results (directory or results.jsonl)."""
    records = list(Store.open(results).load().values())
    click.echo(table.render(records, fmt, baseline), nl=False)


@bench.command("plot")
@click.argument("results", type=click.Path(path_type=Path), default=DEFAULT_OUT)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="where the PNGs go [RESULTS/plots]")
def plot_cmd(results: Path, out: Path | None) -> None:
    """PNG plots: KLD against bits per value (Pareto front), tokens/s against depth."""
    from tqllama.bench.plot import plot

    store = Store.open(results)
    for path in plot(list(store.load().values()), out or store.root / "plots"):
        click.echo(str(path))


@bench.command()
def clean() -> None:
    """Remove the cached f16 base logits (they are rebuilt when a sweep needs them)."""
    count, size = base_logits.clean()
    click.echo(f"removed {count} files ({size / 2**20:.0f} MiB) from {base_logits.cache_root()}")


@click.group()
def model() -> None:
    """Models for benchmarks."""


@model.command("fetch")
@click.argument("alias", type=click.Choice(sorted(assets.MODELS)), default=assets.DEFAULT_MODEL)
def model_fetch(alias: str) -> None:
    """Fetch and verify a model; print its path."""
    click.echo(str(assets.fetch_model(alias)))


@click.group()
def data() -> None:
    """Evaluation texts for benchmarks."""


@data.command("fetch")
@click.argument("name", type=click.Choice(sorted(assets.TEXTS)), default=assets.DEFAULT_TEXT)
def data_fetch(name: str) -> None:
    """Find or download and verify an evaluation text; print its path."""
    click.echo(str(assets.fetch_text(name)))


commands = [bench, model, data]
