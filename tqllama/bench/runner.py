"""Run one llama.cpp tool with stdout and stderr in one log file, and judge how it ended."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tqllama.errors import TqError

# How often the caller's progress callback runs while a tool works.
_TICK_SECONDS = 1.0
_TAIL_LINES = 3
_HEADER = "# "


class ToolError(TqError):
    """A llama.cpp tool exited with an error; the message ends with its log's path."""


def _tool_output(log: Path) -> str:
    """What the tool wrote to its log (without the command line run_logged puts first)."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    return text.split("\n", 1)[1] if text.startswith(_HEADER) else text


def tail(log: Path, lines: int = _TAIL_LINES) -> str:
    """The last non-empty lines the tool wrote, joined into one line."""
    kept = [ln.strip() for ln in _tool_output(log).splitlines() if ln.strip()][-lines:]
    # llama.cpp logs from a thread and can exit before it writes anything.
    return " | ".join(kept) or "it printed nothing"


def diagnose(log: Path) -> str | None:
    """A message that says what to do for the failures a user can fix from the command line."""
    text = _tool_output(log)
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
    """Run `cmd` with its stdout and stderr appended to `log`; return the seconds it took.

    ToolError (with what to do, else the last lines of the log, and the log's path) when it
    fails. On Ctrl-C the tool is stopped before KeyboardInterrupt propagates, so no orphan
    keeps writing.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log.open("w", encoding="utf-8") as fh:
        fh.write(f"{_HEADER}{shlex.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            raise ToolError(f"cannot run {cmd[0]} ({exc.strerror}): check --bin-dir or run "
                            "`tqllama build`") from None
        try:
            while True:
                try:
                    code = proc.wait(timeout=_TICK_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    if on_tick is not None:
                        on_tick(time.monotonic() - start)
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    if code != 0:
        name = Path(cmd[0]).name
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        reason = diagnose(log) or tail(log)
        raise ToolError(f"{name} {how}: {reason} (log: {log})")
    return time.monotonic() - start
