"""Progress of a sweep on stderr: one line per finished run and an ETA.

Runs of the same group (perplexity; speed at one depth) take about as long as each
other: the ETA counts the mean duration of each group's finished runs for what is left of
it. A group with nothing finished yet is guessed from its share of work (roughly, tokens
processed) at the pace of everything finished so far. On a terminal the status line of
tqllama.proc also shows the run in flight.
"""

from __future__ import annotations

from typing import TextIO

from tqllama.proc import StatusLine


def _clock(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.display = StatusLine(stream, live)
        self.todo: list[tuple[str, float]] = []  # (group, work) of each run still to do
        self.done: dict[str, list[tuple[float, float]]] = {}  # group -> (seconds, work)
        self.total = 0
        self.index = 0
        self.label = ""

    def note(self, message: str) -> None:
        self.display.print(message)

    def start(self, todo: list[tuple[str, float]], skipped: int) -> None:
        """(group, work) of the runs to do, in order; `skipped` runs were already stored."""
        self.todo = list(todo)
        self.total = len(todo) + skipped
        self.index = skipped
        if skipped:
            self.display.print(f"{skipped} of {self.total} runs already stored: skipping them")

    def _estimate(self, group: str, work: float) -> float | None:
        known = self.done.get(group)
        if known:
            return sum(s for s, _ in known) / len(known)
        finished = [sw for runs in self.done.values() for sw in runs]
        total_work = sum(w for _, w in finished)
        if not total_work:
            return None
        return work * sum(s for s, _ in finished) / total_work

    def eta(self, elapsed: float = 0.0) -> str:
        if not self.todo:
            return "0:00"
        estimates = [self._estimate(g, w) for g, w in self.todo]
        if any(e is None for e in estimates):
            return "?"
        left = sum(e for e in estimates if e is not None) - min(elapsed, estimates[0] or 0.0)
        return _clock(max(left, 0.0))

    def begin(self, label: str) -> None:
        self.index += 1
        self.label = label
        if not self.display.live:
            self.display.print(f"[{self.index}/{self.total}] {label} ...")

    def tick(self, elapsed: float) -> None:
        self.display.show(f"[{self.index}/{self.total}] {self.label}  {_clock(elapsed)}  "
                          f"ETA {self.eta(elapsed)}")

    def end(self, label: str, seconds: float, summary: str) -> None:
        group, work = self.todo.pop(0)
        self.done.setdefault(group, []).append((seconds, work))
        self.display.print(f"[{self.index}/{self.total}] {label}  {_clock(seconds)}  "
                           f"{summary}  (ETA {self.eta()})")

    def failed(self, label: str, message: str) -> None:
        self.todo.pop(0)
        self.display.print(f"[{self.index}/{self.total}] {label}  FAILED: {message}")
