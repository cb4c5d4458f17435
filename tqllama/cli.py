"""The `tqllama` command: one click group; each command group lives in its own module."""

from __future__ import annotations

import signal
import sys

import click

from tqllama import __version__
from tqllama.commands import bench_cmds, build_cmds, plan_cmd, tune_cmd, verify_cmd
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


# each command group lives in its own module, which lists its commands in `commands`
for _module in (bench_cmds, build_cmds, plan_cmd, tune_cmd, verify_cmd):
    for _command in _module.commands:
        cli.add_command(_command)


def _terminated(signum: int, frame: object) -> None:
    # `kill`, a job scheduler or a timeout unwinds like Ctrl-C: the tools and servers started
    # are stopped where they were started, and an interrupted sweep keeps its finished runs
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    cli()
