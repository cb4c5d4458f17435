"""Run a command with its output in a log file, its progress on stderr, a failure in one line.

The build (cmake, ninja), the llama-cpp-python wheel (pip) and every llama.cpp tool of a
sweep run through `run`. The command writes straight into its log, stdout and stderr in
the order it wrote them; `run` follows the file to hand each line to the caller's progress
(ninja's `[n/N]` for a build) and ticks while it waits (a sweep's clock and ETA). Both
show on one StatusLine.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TextIO

from tqllama.errors import TqError

# The first line of each command in its log: `# cmd args ...`
HEADER = "# "
# How often a running command's new output is read and the caller's tick runs.
_TICK_SECONDS = 0.5


class ToolError(TqError):
    """A command `run` ran failed; the message ends with its log's path."""


class StatusLine:
    """Progress on stderr: one line rewritten in place on a terminal; elsewhere (CI logs,
    pipes) only the lines printed to stay."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.shown = False

    def show(self, text: str) -> None:
        """The status line's new text; nothing off a terminal."""
        if self.live:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r\033[K" + text[:width])
            self.stream.flush()
            self.shown = True

    def print(self, text: str) -> None:
        """A line that stays, in place of the status line."""
        self.stream.write(("\r\033[K" if self.shown else "") + text + "\n")
        self.stream.flush()
        self.shown = False

    def close(self) -> None:
        """End the status line, leaving its last text on screen."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


# pip wheel -v indents the output of the build it runs
_STEP = re.compile(r"^\s*\[\s*(\d+)/(\d+)\]|^\s*\[\s*(\d+)%\]")


class BuildSteps:
    """A build's `[n/N] what` lines (ninja; make's `[ n%]`): the latest on the status line
    of a terminal, one line every tenth of the way elsewhere. A context manager that ends
    the status line however the build ends."""

    def __init__(self, display: StatusLine | None = None) -> None:
        self.display = display or StatusLine()
        self.shown_decile = -1

    def line(self, text: str) -> None:
        match = _STEP.match(text)
        if not match:
            return
        done, total = (int(match[3]), 100) if match[3] is not None else (int(match[1]),
                                                                          int(match[2]))
        if self.display.live:
            self.display.show(text.strip())
        elif (decile := 10 * done // max(total, 1)) > self.shown_decile:
            self.shown_decile = decile
            self.display.print(f"tqllama: build {done}/{total}")

    def __enter__(self) -> BuildSteps:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.display.close()


def run(cmd: Sequence[str], log: Path, *, append: bool = False, what: str | None = None,
        env: Mapping[str, str] | None = None, on_line: Callable[[str], None] | None = None,
        on_tick: Callable[[float], None] | None = None,
        explain: Callable[[Path], str | None] | None = None, hint: str | None = None,
        ) -> float:
    """Run `cmd` with its stdout and stderr in `log` (after what is there with `append`);
    return the seconds it took.

    ToolError when it fails, in one line: `{what} failed` (else the command's name and how
    it ended), then `explain(log)` or an excerpt of its output, then the log's path; `hint`
    says what to do when the command cannot be started at all. On Ctrl-C the command is
    stopped before KeyboardInterrupt propagates, so no orphan keeps writing.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log.open("ab" if append else "wb") as out, log.open("rb") as follow:
        if out.tell() and _read(log, out.tell() - 1) != "\n":
            out.write(b"\n")  # the last command's output did not end its line
        out.write(f"{HEADER}{shlex.join(cmd)}\n".encode())
        out.flush()
        begin = out.tell()
        follow.seek(begin)
        try:
            child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            advice = f": {hint}" if hint else ""
            raise ToolError(f"cannot run {cmd[0]} ({exc.strerror}){advice}") from None
        lines = _Lines(follow, on_line)
        try:
            while True:
                try:
                    code = child.wait(timeout=_TICK_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    lines.read()
                    if on_tick is not None:
                        on_tick(time.monotonic() - start)
        except BaseException:
            stop(child)
            raise
        lines.read(final=True)
    if code != 0:
        name = Path(cmd[0]).name
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        head = f"{what} failed" if what else f"{name} {how}"
        output = _read(log, begin).splitlines()
        reason = (explain(log) if explain else None) or excerpt(output) or "it printed nothing"
        raise ToolError(f"{head}: {reason} (full log: {log})")
    return time.monotonic() - start


def tool_output(log: Path) -> str:
    """What the one command of a log wrote (without the command line `run` puts first)."""
    text = _read(log, 0) if log.is_file() else ""
    return text.split("\n", 1)[1] if text.startswith(HEADER) else text


def excerpt(lines: Sequence[str]) -> str:
    """A few log lines that say why a command failed: the first errors, then the last lines."""
    picked: list[str] = []
    for i, line in enumerate(lines):
        if len(picked) >= 3:
            break
        if re.search(r"\berror\b", line, re.IGNORECASE):
            picked.append(line)
            if line.startswith("CMake Error") and (message := _cmake_message(lines[i + 1:])):
                picked.append(" ".join(message))
    picked += [ln for ln in lines if ln.strip()][-2:]
    short = list(dict.fromkeys(ln.strip()[:200] for ln in picked))
    return " | ".join(short[:5])


def _cmake_message(lines: Sequence[str]) -> list[str]:
    """The first lines of the indented message CMake writes under "CMake Error at ..."."""
    message: list[str] = []
    for line in lines:
        if line.strip() and not line.startswith(" "):
            break
        if line.strip():
            message.append(line.strip())
    return message[:4]


class _Lines:
    """Hands each complete line a command has written to its log to `on_line`."""

    def __init__(self, follow: BinaryIO, on_line: Callable[[str], None] | None) -> None:
        self.follow = follow
        self.on_line = on_line
        self.partial = b""

    def read(self, final: bool = False) -> None:
        if self.on_line is None:
            return
        *complete, self.partial = (self.partial + self.follow.read()).split(b"\n")
        if final and self.partial:
            complete.append(self.partial)
        for line in complete:
            self.on_line(line.decode("utf-8", errors="replace"))


def _read(log: Path, offset: int) -> str:
    with log.open("rb") as fh:
        fh.seek(offset)
        return fh.read().decode("utf-8", errors="replace")


def stop(child: subprocess.Popen[bytes], grace: float = 10) -> None:
    """Terminate `child`, and kill it if it has not exited after `grace` seconds."""
    child.terminate()
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
