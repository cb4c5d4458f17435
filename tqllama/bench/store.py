"""Append-only store of finished runs: one JSON line per run, raw logs kept beside.

`<out>/results.jsonl` gets a line the moment a run finishes (written, flushed and synced
before the next run starts), so an interrupted sweep loses at most the run in flight (of a
passkey run, the trial in flight: its finished trials wait in `<out>/partial/`). A run's
`key` hashes everything that determines its result; rerunning a key appends a new
line and the last line wins.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqllama.bench.parse_bench import BenchRow
from tqllama.bench.parse_perplexity import PerplexityResult
from tqllama.cachepair import BOUNDARY_DEFAULT, CachePair
from tqllama.errors import TqError

RESULTS_FILE = "results.jsonl"
LOGS_DIR = "logs"
PARTIAL_DIR = "partial"  # the finished parts of runs in flight (a passkey run's trials)
SCHEMA = 1


@dataclass(frozen=True)
class FileRef:
    path: str
    sha256: str


@dataclass(frozen=True)
class RunRecord:
    """One finished run: what ran, on what, and the numbers its log holds."""

    key: str
    kind: str  # "base" (f16 logits for KLD), "kld" (llama-perplexity), "passkey" (llama-server)
    #            or "bench" (llama-bench)
    type_k: str
    type_v: str
    params: dict[str, Any]  # what determines the result besides the files: ctx, depth, ...
    command: list[str]
    build_id: str  # hash of the binaries and libraries that ran
    build_manifest: str | None  # the key of `tqllama build`'s manifest; None with --bin-dir
    model: FileRef
    text: FileRef | None
    log: str  # relative to the store's directory
    started: str
    seconds: float
    perplexity: PerplexityResult | None = None
    bench: tuple[BenchRow, ...] = field(default_factory=tuple)
    # the passkey check (tqllama.bench.retrieval.summary): found, tried, by_length, trials
    passkey: dict[str, Any] | None = None
    # boundary layers (--cache-boundary-layers): absent from records made before they existed
    boundary: int = 0
    type_k_boundary: str = BOUNDARY_DEFAULT
    type_v_boundary: str = BOUNDARY_DEFAULT
    # a cache policy (CachePair.policy): absent from records made before they existed
    policy: str = ""
    # the tools' environment settings (CachePair.env): absent from records made before them
    env: dict[str, str] = field(default_factory=dict)
    schema: int = SCHEMA

    @property
    def pair(self) -> CachePair:
        return CachePair(self.type_k, self.type_v, self.boundary, self.type_k_boundary,
                         self.type_v_boundary, self.policy, tuple(sorted(self.env.items())))

    @property
    def pair_label(self) -> str:
        return self.pair.label


def _revive(tp: Any, value: Any) -> Any:
    """Rebuild a value of annotated type `tp` (dataclasses, tuples, optionals) from JSON."""
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _revive(hints[f.name], value[f.name])
                     for f in dataclasses.fields(tp) if f.name in value})
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _revive(inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        return tuple(_revive(typing.get_args(tp)[0], v) for v in value)
    return value


class Store:
    """The results of one sweep directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.results = root / RESULTS_FILE
        self.logs = root / LOGS_DIR

    @classmethod
    def open(cls, path: Path) -> Store:
        """A store from its directory or its results.jsonl; TqError if there is none."""
        root = path.parent if path.name == RESULTS_FILE else path
        store = cls(root)
        if not store.results.is_file():
            raise TqError(f"no {RESULTS_FILE} in {root}: pass the --out directory of a sweep")
        return store

    def log_path(self, name: str) -> Path:
        self.logs.mkdir(parents=True, exist_ok=True)
        return self.logs / name

    def append(self, record: RunRecord) -> None:
        _append_line(self.results, dataclasses.asdict(record))
        self.drop_parts(record.key)

    def _partial(self, key: str) -> Path:
        return self.root / PARTIAL_DIR / f"{key}.jsonl"

    def add_part(self, key: str, part: dict[str, Any]) -> None:
        """Keep one finished part of run `key` (one passkey trial), so that a run stopped
        midway goes on from there; the run's record, once appended, replaces them."""
        _append_line(self._partial(key), part)

    def drop_parts(self, key: str) -> None:
        self._partial(key).unlink(missing_ok=True)

    def parts(self, key: str) -> list[dict[str, Any]]:
        """The parts of run `key` kept so far (a line cut short by a crash is left out)."""
        path = self._partial(key)
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def load(self) -> dict[str, RunRecord]:
        """The latest record of every key, in the order keys first appeared."""
        if not self.results.is_file():
            return {}
        records: dict[str, RunRecord] = {}
        lines = self.results.read_text(encoding="utf-8").split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = _revive(RunRecord, json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):  # a write cut short by a crash: that run never finished
                    continue
                raise TqError(f"{self.results} line {number} is damaged: delete that line "
                              "and rerun the sweep to redo its run") from None
            if record.schema != SCHEMA:
                raise TqError(f"{self.results} has schema {record.schema}, this tqllama reads "
                              f"{SCHEMA}: rerun the sweep into a new --out directory")
            records[record.key] = record
        return records


def _append_line(path: Path, value: Any) -> None:
    """One JSON line, written, flushed and synced before anything else runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(value, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
