"""Run one llama.cpp tool of a sweep (tqllama.proc), and say what to do when it fails."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from tqllama import proc


def diagnose(log: Path) -> str | None:
    """A message that says what to do for the failures a user can fix from the command line."""
    text = proc.tool_output(log)
    short = re.search(r"you need at least (\d+) tokens to evaluate perplexity with a context "
                      r"of (\d+)", text)
    if short:
        have = re.search(r"tokenizes to only (\d+) tokens", text)
        got = f"it has {have.group(1)} tokens; " if have else ""
        return (f"the text is too short for a context of {short.group(2)}: {got}it needs at "
                f"least {short.group(1)}; pass a longer --text or a smaller --ctx")
    unsupported = re.search(r"Unsupported cache type: *(\S+)", text)
    if unsupported:
        return (f"this build does not support cache type {unsupported.group(1)}: rebuild with "
                "`tqllama build` or drop that pair")
    # llama-bench keeps its own list of type names and says only which option it rejects.
    rejected = re.search(r"invalid parameter for argument: *(-ctk|-ctv)\b", text)
    if rejected:
        return (f"llama-bench rejects the cache type given to {rejected.group(1)} (it has its "
                "own list of types): rebuild with `tqllama build` or drop that pair")
    return None


def run_logged(
    cmd: Sequence[str],
    log: Path,
    on_tick: Callable[[float], None] | None = None,
    env: dict[str, str] | None = None,
) -> float:
    """Run a tool with its output in `log` (a log of its own); the seconds it took.

    proc.ToolError when it fails, with what to do (`diagnose`) where a user can fix it.
    """
    return proc.run(cmd, log, env=env, on_tick=on_tick, explain=diagnose,
                    hint="check --bin-dir or run `tqllama build`")
