"""`tqllama verify`: the reference quantizers' error figures (logic in tqllama.quant.verify)."""

from __future__ import annotations

import json

import click

from tqllama.errors import TqError


@click.command("verify")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per quantizer.")
@click.option(
    "--rows",
    type=int,
    default=20_000,
    show_default=True,
    help="Rows of 64 per data set (the bars are stated for 200000).",
)
@click.option("--seed", type=int, default=0, show_default=True)
def verify(as_json: bool, rows: int, seed: int) -> None:
    """MSE and inner-product error of turbo, turbo_qjl, PolarQuant, q8_0, q4_0, iq4_nl."""
    if rows < 2:
        raise TqError(f"--rows must be at least 2, got {rows}")
    from tqllama.quant import verify as verify_mod

    results = verify_mod.run(rows=rows, seed=seed)
    if as_json:
        click.echo(json.dumps(results, indent=1))
    else:
        click.echo(verify_mod.format_table(results))


commands = [verify]
