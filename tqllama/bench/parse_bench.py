"""Parse llama-bench reports (`-o json`, `jsonl`, `csv`, `md`) into typed rows.

The report may be mixed with llama-bench's stderr (runs capture both into one log); only
lines that belong to the report are read. Only json and md say where the report ends, so
callers that know how many tests they asked for pass `expected_rows`: a cut-off jsonl or
csv report then raises ParseError instead of silently losing rows.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from typing import Any

from tqllama.bench.logtext import NUMBER, PLUS_MINUS, ParseError, complete_text

FORMATS = ("json", "jsonl", "csv", "md")

# llama-bench's markdown hides the type columns when they hold the default (f16).
_DEFAULT_TYPE = "f16"


@dataclass(frozen=True)
class BenchRow:
    """One llama-bench test: prompt processing (pp), generation (tg) or both, at a KV depth."""

    type_k: str
    type_v: str
    n_prompt: int
    n_gen: int
    n_depth: int
    avg_ts: float
    stddev_ts: float

    @property
    def test(self) -> str:
        """llama-bench's own name for the test: `pp512`, `tg64` or `pp512+tg64`."""
        if self.n_gen == 0:
            return f"pp{self.n_prompt}"
        if self.n_prompt == 0:
            return f"tg{self.n_gen}"
        return f"pp{self.n_prompt}+tg{self.n_gen}"


def _row(fields: dict[str, Any]) -> BenchRow:
    try:
        return BenchRow(
            type_k=str(fields["type_k"]),
            type_v=str(fields["type_v"]),
            n_prompt=int(fields["n_prompt"]),
            n_gen=int(fields["n_gen"]),
            n_depth=int(fields["n_depth"]),
            avg_ts=float(fields["avg_ts"]),
            stddev_ts=float(fields["stddev_ts"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ParseError(f"llama-bench row lacks a readable field ({exc}): rerun it") from None


def _json(text: str) -> list[BenchRow]:
    m = re.search(r"^\[\s*$(.*?)^\]\s*$", text, re.MULTILINE | re.DOTALL)
    if m is None:
        raise ParseError("no complete llama-bench json report (`[ ... ]`) in the log: rerun it")
    try:
        tests = json.loads(f"[{m.group(1)}]")
    except json.JSONDecodeError as exc:
        raise ParseError(f"llama-bench json report is damaged ({exc}): rerun it") from None
    return [_row(t) for t in tests]


def _jsonl(text: str) -> list[BenchRow]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        try:
            rows.append(_row(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ParseError(f"llama-bench jsonl line is damaged ({exc}): rerun it") from None
    return rows


def _csv(text: str) -> list[BenchRow]:
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("build_commit,"))
    except StopIteration:
        raise ParseError("no llama-bench csv header in the log: rerun it") from None
    reader = csv.reader(line for line in lines[start:] if line.startswith('"'))
    header = lines[start].split(",")
    rows = []
    for values in reader:
        if len(values) != len(header):
            raise ParseError("llama-bench csv row has the wrong number of fields: rerun it")
        rows.append(_row(dict(zip(header, values, strict=True))))
    return rows


def _md(text: str) -> list[BenchRow]:
    table = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(table) < 2 or re.search(r"^build: ", text, re.MULTILINE) is None:
        raise ParseError("no complete llama-bench markdown table (with its `build:` footer): "
                         "rerun it")
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = []
    for line in table[2:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=False))
        test = re.fullmatch(r"(?:pp(\d+))?\+?(?:tg(\d+))?(?: @ d(\d+))?", cells.get("test", ""))
        speed = re.fullmatch(rf"({NUMBER})\s*{PLUS_MINUS}\s*({NUMBER})", cells.get("t/s", ""))
        if test is None or speed is None or not (test.group(1) or test.group(2)):
            raise ParseError(f"unreadable llama-bench markdown row {line!r}: rerun it")
        rows.append(_row({
            "type_k": cells.get("type_k", _DEFAULT_TYPE),
            "type_v": cells.get("type_v", _DEFAULT_TYPE),
            "n_prompt": test.group(1) or 0,
            "n_gen": test.group(2) or 0,
            "n_depth": test.group(3) or 0,
            "avg_ts": speed.group(1),
            "stddev_ts": speed.group(2),
        }))
    return rows


_PARSERS = {"json": _json, "jsonl": _jsonl, "csv": _csv, "md": _md}


def parse_bench(text: str, fmt: str, expected_rows: int | None = None) -> list[BenchRow]:
    """Rows of a llama-bench report in `fmt`; ParseError when cut off, crashed or empty."""
    if fmt not in _PARSERS:
        raise ParseError(f"unknown llama-bench format {fmt!r}: use one of {', '.join(FORMATS)}")
    rows = _PARSERS[fmt](complete_text(text))
    if not rows:
        raise ParseError("llama-bench reported no tests: the run crashed; see its log")
    if expected_rows is not None and len(rows) != expected_rows:
        raise ParseError(
            f"llama-bench reported {len(rows)} of {expected_rows} tests: the run was cut short "
            "or crashed; rerun it"
        )
    return rows
