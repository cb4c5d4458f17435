"""The `tqllama` command: one click group; each command group lives in its own module."""

from __future__ import annotations

import sys

import click

from tqllama import __version__
from tqllama.errors import TqError


class _Group(click.Group):
    """Turns every TqError into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except TqError as exc:
            click.echo(f"tqllama: error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="tqllama")
def cli() -> None:
    """TurboQuant KV-cache types for llama.cpp: build, verify, benchmark."""


def _register() -> None:
    # Command modules register themselves here; each module exposes `commands`.
    import importlib

    for name in ("build_cmds", "verify_cmd", "bench_cmds", "plan_cmd"):
        try:
            module = importlib.import_module(f"tqllama.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tqllama.commands.{name}":
                raise
            continue
        for command in module.commands:
            cli.add_command(command)


_register()


def main() -> None:
    cli()
