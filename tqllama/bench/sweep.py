"""A sweep: the f16 base once, then llama-perplexity (KLD), the passkey check at depth
(llama-server, when asked for) and llama-bench for every K/V pair.

Every finished run goes into the Store at once; a rerun skips the runs whose key (what
determines the result: binaries, model, text, settings) is already there, so Ctrl-C and
crashes lose only the run in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqllama import assets
from tqllama.backends import check_backend
from tqllama.bench import base_logits, retrieval
from tqllama.bench.logtext import ParseError
from tqllama.bench.parse_bench import parse_bench
from tqllama.bench.parse_perplexity import PerplexityResult, parse_perplexity
from tqllama.bench.presets import PRESET_SETTINGS, preset
from tqllama.bench.progress import Progress
from tqllama.bench.runner import diagnose, run_logged
from tqllama.bench.store import FileRef, RunRecord, Store
from tqllama.cachepair import POLICY_TUNED, CachePair
from tqllama.errors import TqError
from tqllama.source import sha256_file
from tqllama.types import CACHE_TYPES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PERPLEXITY = "llama-perplexity"
BENCH = "llama-bench"
SERVER = "llama-server"
DEFAULT_OUT = Path("tqllama-results")


@dataclass(frozen=True)
class SweepSettings:
    """Everything a sweep needs; the CLI and `--config` TOML files fill it."""

    pairs: tuple[CachePair, ...] = ()
    model: str | None = None
    text: str | None = None
    ctx: int = 512
    chunks: int = 64
    depths: tuple[int, ...] = (0, 4096, 16384)
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    backend: str = "cpu"
    out: Path = DEFAULT_OUT
    n_prompt: int = 512
    n_gen: int = 64
    reps: int = 2
    passkey: tuple[int, ...] = ()  # contexts the passkey trials fill (tokens); none: no check
    passkey_depths: tuple[float, ...] = (0.1, 0.5, 0.9)  # of the shortest context's prompt
    passkey_keys: int = 1  # keys per depth, each asked at every length
    passkey_seed: int = 0  # which keys: another seed draws other numbers
    bin_dir: Path | None = None
    force: bool = False
    keep_going: bool = False


def parse_depths(value: Any) -> tuple[int, ...]:
    """`0,4096` or a TOML list of ints."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        out = tuple(int(str(x).strip()) for x in items if str(x).strip())
    except (TypeError, ValueError):
        raise TqError(f"--depths must be integers like 0,4096: got {value!r}") from None
    if any(x < 0 for x in out):
        raise TqError(f"--depths must not be negative: got {value!r}")
    return out


def parse_passkey(value: Any) -> tuple[int, ...]:
    """`2048,8192` or a TOML list: the contexts passkey trials fill, in tokens."""
    return _numbers(value, int, "--passkey", "context lengths in tokens like 2048,8192",
                    lambda x: x >= 64)


def parse_passkey_depths(value: Any) -> tuple[float, ...]:
    """`0.1,0.5,0.9` or a TOML list: where each key sits, as fractions of the shortest
    context's prompt."""
    return _numbers(value, float, "--passkey-depths", "fractions like 0.1,0.5,0.9",
                    lambda x: 0.0 <= x < 1.0)


def _numbers(value: Any, kind: type, option: str, what: str, ok: Callable[[Any], bool],
             ) -> tuple[Any, ...]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        out = tuple(kind(str(x).strip()) for x in items if str(x).strip())
    except (TypeError, ValueError):
        raise TqError(f"{option} must be {what}: got {value!r}") from None
    if not all(ok(x) for x in out):
        raise TqError(f"{option} must be {what}: got {value!r}")
    return out


def pairs_from(preset_name: str | None, caches: Sequence[str]) -> tuple[CachePair, ...]:
    """The preset's pairs, then any explicit `--cache K/V`; the default preset when neither."""
    pairs = list(preset(preset_name)) if preset_name else []
    pairs += [CachePair.parse(c) for c in caches]
    return tuple(dict.fromkeys(pairs or preset("default")))


_CONFIG_KEYS = {f for f in SweepSettings.__dataclass_fields__ if f != "pairs"} | {
    "preset", "caches"}
_CONFIG_TYPES: dict[str, type] = {
    **dict.fromkeys(("ctx", "chunks", "threads", "n_prompt", "n_gen", "reps", "passkey_keys",
                     "passkey_seed"), int),
    **dict.fromkeys(("model", "text", "backend", "out", "bin_dir", "preset"), str),
    **dict.fromkeys(("force", "keep_going"), bool),
    "caches": list,
}


def load_config(path: Path) -> dict[str, Any]:
    """A TOML sweep file as SweepSettings fields (keys as the CLI's long options, `_` or `-`)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TqError(f"cannot read {path} ({exc.strerror}): pass an existing --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise TqError(f"{path} is not valid TOML ({exc}): fix it") from None
    data = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise TqError(f"{path}: unknown keys {', '.join(unknown)}; known: "
                      f"{', '.join(sorted(_CONFIG_KEYS))}")
    for key, value in data.items():
        want = _CONFIG_TYPES.get(key)
        if want is not None and not isinstance(value, want):
            raise TqError(f"{path}: {key} must be {want.__name__}, not {value!r}")
    out: dict[str, Any] = {}
    if "preset" in data or "caches" in data:
        out["pairs"] = pairs_from(data.pop("preset", None), data.pop("caches", []))
    if "depths" in data:
        out["depths"] = parse_depths(data.pop("depths"))
    if "passkey" in data:
        out["passkey"] = parse_passkey(data.pop("passkey"))
    if "passkey_depths" in data:
        out["passkey_depths"] = parse_passkey_depths(data.pop("passkey_depths"))
    for key in ("out", "bin_dir"):
        if key in data:
            out[key] = Path(data.pop(key)).expanduser()
    out.update(data)
    return out


def settings_from(config: Path | None, caches: Sequence[str], preset_name: str | None,
                  **options: Any) -> SweepSettings:
    """The sweep's settings from `--config`, a preset and the options as the CLI gives them
    (None: not given; depths and passkey options as strings): the options win over the file,
    the file over the preset's own settings (PRESET_SETTINGS), those over the defaults."""
    fields: dict[str, Any] = load_config(config) if config else {}
    if caches or preset_name:
        fields["pairs"] = pairs_from(preset_name, caches)
    for key, value in PRESET_SETTINGS.get(preset_name or "", {}).items():
        fields.setdefault(key, value)
    for key, parse in (("depths", parse_depths), ("passkey", parse_passkey),
                       ("passkey_depths", parse_passkey_depths)):
        if options.get(key) is not None:
            options[key] = parse(options[key])
    fields.update({k: v for k, v in options.items() if v is not None and v is not False})
    return SweepSettings(**fields)


# ---------------------------------------------------------------- binaries


def tool_path(name: str, settings: SweepSettings) -> Path:
    """`--bin-dir`'s tool, else the one `tqllama build` made for the backend."""
    if settings.bin_dir is not None:
        path = settings.bin_dir / name
        if not path.is_file():
            raise TqError(f"no {name} in {settings.bin_dir}: pass the bin directory of a "
                          "llama.cpp build")
        return path
    # Imported here: a --bin-dir sweep needs nothing of tqllama's own build.
    from tqllama.build import binary_path

    return binary_path(name, backend=settings.backend)


def manifest_key(settings: SweepSettings) -> str | None:
    """The key of `tqllama build`'s manifest when its binaries run; None with --bin-dir."""
    if settings.bin_dir is not None:
        return None
    from tqllama.build import Manifest, manifest_path

    manifest = Manifest.load(manifest_path(settings.backend))
    return manifest.key if manifest else None


def build_fingerprint(tools: list[Path]) -> str:
    """A hash of the tools and the shared libraries beside them: what ran, byte for byte."""
    files = set(tools)
    for tool in tools:
        files.update(p for p in tool.parent.glob("lib*.so*") if p.is_file())
        files.update(p for p in tool.parent.glob("lib*.dylib") if p.is_file())
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ToolOptions:
    """What a llama-perplexity binary offers, as its `--help` says."""

    k_types: tuple[str, ...]
    v_types: tuple[str, ...]
    boundary: bool  # --cache-boundary-layers (tqllama's builds)
    policy: bool = False  # --cache-policy (tqllama's builds)


def tool_options(perplexity: Path) -> ToolOptions:
    proc = subprocess.run([str(perplexity), "--help"], capture_output=True, text=True,
                          timeout=60)
    text = proc.stdout + proc.stderr
    lists = []
    for option in ("--cache-type-k", "--cache-type-v"):
        # The list wraps over several lines and ends where "(default: ...)" starts; the
        # boundary options (--cache-type-k-boundary) have lists of their own.
        m = re.search(rf"{option}(?![\w-]).*?allowed values:(.*?)\(default", text, re.DOTALL)
        if m is None:
            raise TqError(f"{perplexity} --help lists no {option} types: is it a llama.cpp "
                          "llama-perplexity?")
        lists.append(tuple(t for t in re.split(r"[\s,]+", m.group(1)) if t))
    return ToolOptions(lists[0], lists[1], "--cache-boundary-layers" in text,
                       "--cache-policy" in text)


def runnable_pairs(pairs: Sequence[CachePair], options: ToolOptions, perplexity: Path,
                   ) -> tuple[tuple[CachePair, ...], list[str]]:
    """The pairs the build can run, and one note per reason for the pairs it cannot.

    A pair is left out when it needs a cache type tqllama knows but this build lacks (the
    `_qjl` K types before they are built, the turbo types in an upstream build) or boundary
    layers the build does not offer: a preset can then still run on any build. A name that
    no build knows is a typo: TqError, listing the build's types.
    """
    for side, allowed, asked in (
            ("K", options.k_types, {t for p in pairs for t in (p.k, *_boundary(p, "k"))}),
            ("V", options.v_types, {t for p in pairs for t in (p.v, *_boundary(p, "v"))})):
        unknown = sorted(asked - set(allowed) - set(CACHE_TYPES))
        if unknown:
            raise TqError(f"{side} cache type {', '.join(unknown)} unknown to {perplexity}: it "
                          f"has {', '.join(allowed)} (`tqllama build` builds the turbo types)")
    skipped: dict[str, list[str]] = {}
    kept = []
    for p in pairs:
        lacking = sorted({p.k, *_boundary(p, "k")} - set(options.k_types)
                         | {p.v, *_boundary(p, "v")} - set(options.v_types))
        if lacking:
            skipped.setdefault(f"the build has no {', '.join(lacking)}", []).append(p.label)
        elif p.boundary and not options.boundary:
            skipped.setdefault("the build has no --cache-boundary-layers", []).append(p.label)
        elif p.policy and not options.policy:
            skipped.setdefault("the build has no --cache-policy", []).append(p.label)
        else:
            kept.append(p)
    notes = [f"skipped {', '.join(labels)}: {why}" for why, labels in skipped.items()]
    return tuple(kept), notes


def _boundary(pair: CachePair, side: str) -> tuple[str, ...]:
    if not pair.boundary:
        return ()
    return (pair.k_boundary,) if side == "k" else (pair.v_boundary,)


# ---------------------------------------------------------------- planning


@dataclass(frozen=True)
class Run:
    kind: str  # "base" | "kld" | "passkey" | "bench"
    pair: CachePair
    params: dict[str, Any]
    key: str
    command: list[str]

    @property
    def depth(self) -> int | None:
        return self.params.get("depth")

    @property
    def group(self) -> str:
        """Runs of one group take about as long as each other (for the ETA)."""
        if self.kind == "bench":
            return f"bench@{self.depth}"
        return "passkey" if self.kind == "passkey" else "perplexity"

    @property
    def work(self) -> float:
        """Tokens processed, generated ones weighted 4x (one at a time): for the ETA."""
        p = self.params
        if self.kind == "bench":
            return (p["reps"] + 1) * (p["n_prompt"] + 4 * p["n_gen"]) + p["depth"]
        if self.kind == "passkey":
            # each key's longest prompt once (the others are its prefixes), then the questions
            keys = len(p["passkey_depths"]) * p["passkey_keys"]
            return keys * (max(p["passkey"]) + 4 * 32 * len(p["passkey"]))
        return p["ctx"] * p["chunks"]

    @property
    def label(self) -> str:
        where = f" @ d{self.depth}" if self.kind == "bench" else ""
        return f"{self.kind:5s} {self.pair.label}{where}"

    def log_name(self) -> str:
        where = f"-d{self.depth}" if self.kind == "bench" else ""
        return f"{self.kind}-{self.pair.slug}{where}-{self.key[:8]}.log"


@dataclass(frozen=True)
class Environment:
    """The concrete files a sweep runs on, hashed once."""

    perplexity: Path
    bench: Path
    build_id: str
    build_manifest: str | None
    model: FileRef
    text: FileRef
    server: Path | None = None  # llama-server, when the sweep checks passkeys


def _key(**what: Any) -> str:
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _backend_args(settings: SweepSettings) -> list[str]:
    # tqllama builds one backend per binary; offload everything on GPU backends.
    return [] if settings.backend == "cpu" else ["-ngl", "99"]


def base_key(settings: SweepSettings, env: Environment) -> str:
    return _key(kind="base", build=env.build_id, model=env.model.sha256, text=env.text.sha256,
                ctx=settings.ctx, chunks=settings.chunks, backend=settings.backend)


def plan(settings: SweepSettings, env: Environment) -> tuple[Run, list[Run]]:
    """The base run and the runs of every pair: all KLD runs first, then all speed runs."""
    s = settings
    logits = base_logits.path_for(base_key(s, env))
    ppl = [str(env.perplexity), "-m", env.model.path, "-f", env.text.path, "-c", str(s.ctx),
           "--chunks", str(s.chunks), "-t", str(s.threads), "-fa", "on",
           # libllama's info lines (the KV cache size) show only from verbosity 4 on
           "-lv", "4", *_backend_args(s)]
    f16 = CachePair("f16", "f16")
    base_params = {"ctx": s.ctx, "chunks": s.chunks, "threads": s.threads, "backend": s.backend}
    base = Run("base", f16, base_params, base_key(s, env),
               [*ppl, "--kl-divergence-base", str(logits)])
    runs = []
    for pair in s.pairs:
        key = _key(kind="kld", **pair.key_fields(), base=base.key)
        runs.append(Run("kld", pair, base_params, key,
                        [*ppl, *pair.args(), "--kl-divergence-base", str(logits),
                         "--kl-divergence"]))
    # the needle and the question in the key: trials asked differently are other runs
    passkey = {"passkey": s.passkey, "passkey_depths": s.passkey_depths,
               "passkey_keys": s.passkey_keys, "threads": s.threads, "backend": s.backend,
               "filler": retrieval.FILLER, "needle": retrieval.NEEDLE,
               "question": retrieval.QUESTION}
    if s.passkey_seed:  # in the key only when set: runs stored before it keep their keys
        passkey["passkey_seed"] = s.passkey_seed
    server_id = sha256_file(env.server)[:16] if s.passkey and env.server else None
    for pair in s.pairs if s.passkey else ():
        key = _key(kind="passkey", **pair.key_fields(), build=env.build_id, server=server_id,
                   model=env.model.sha256, **passkey)
        runs.append(Run("passkey", pair, passkey, key,
                        [str(env.server), "-m", env.model.path, *pair.args(), *_backend_args(s)]))
    for pair in s.pairs:
        for depth in s.depths:
            params = {"depth": depth, "n_prompt": s.n_prompt, "n_gen": s.n_gen, "reps": s.reps,
                      "threads": s.threads, "backend": s.backend}
            key = _key(kind="bench", **pair.key_fields(), build=env.build_id,
                       model=env.model.sha256, **params)
            runs.append(Run("bench", pair, params, key, [
                str(env.bench), "-m", env.model.path, "-p", str(s.n_prompt), "-n", str(s.n_gen),
                "-d", str(depth), "-r", str(s.reps), "-t", str(s.threads), "-fa", "1",
                *pair.args(), "-o", "jsonl", *_backend_args(s)]))
    return base, runs


# ---------------------------------------------------------------- running


def _parse_log(log: Path, parse: Callable[[str], Any]) -> Any:
    """Numbers of a finished run; a log without them says why (a short text, ...) if it can."""
    try:
        return parse(log.read_text(encoding="utf-8", errors="replace"))
    except ParseError as exc:
        raise ParseError(f"{diagnose(log) or exc} (log: {log})") from None


def _check_chunks(result: PerplexityResult, settings: SweepSettings, log: Path) -> None:
    # llama-perplexity silently runs fewer chunks than asked when the text is short.
    if result.n_chunks < settings.chunks:
        raise TqError(f"the text holds only {result.n_chunks} chunks of {settings.ctx} tokens, "
                      f"not {settings.chunks}: pass --chunks {result.n_chunks} or a longer --text "
                      f"(log: {log})")


class Sweep:
    """Runs the plan against a store; `execute` is safe to interrupt and to call again."""

    def __init__(self, settings: SweepSettings, env: Environment, progress: Progress,
                 skipped: Sequence[str] = ()) -> None:
        self.settings = settings
        self.skipped = list(skipped)  # notes on the pairs the build cannot run
        self.env = env
        self.progress = progress
        self.store = Store(settings.out)
        self.base, self.runs = plan(settings, env)
        self.failures: list[str] = []

    def pending(self) -> list[Run]:
        done = self.store.load()
        return [r for r in self.runs if self.settings.force or r.key not in done]

    def execute(self) -> list[RunRecord]:
        """Run what is pending (the base first when needed); the records of this plan, the
        base's included (the table takes the f16 cache's PPL from it)."""
        todo = self.pending()
        skipped = len(self.runs) - len(todo)
        logits = base_logits.path_for(self.base.key)
        if any(r.kind == "kld" for r in todo) and (self.settings.force or not logits.is_file()):
            todo.insert(0, self.base)
        elif logits.is_file():
            base_logits.touch(logits)
        self.progress.start([(r.group, r.work) for r in todo], skipped)
        for run in todo:
            try:
                self._run(run)
            except TqError as exc:
                if run.kind == "base" or not self.settings.keep_going:
                    raise
                self.failures.append(f"{run.pair.label} {run.kind}: {exc}")
                self.progress.failed(run.label, str(exc))
        done = self.store.load()
        return [done[r.key] for r in (self.base, *self.runs) if r.key in done]

    def _run(self, run: Run) -> None:
        log = self.store.log_path(run.log_name())
        self.progress.begin(run.label)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        fields: dict[str, Any]
        if run.kind == "passkey":
            seconds, fields = self._run_passkey(run, log)
            summary = f"passkey {fields['passkey']['found']}/{fields['passkey']['tried']}"
        elif run.kind == "bench":
            expected = (self.settings.n_prompt > 0) + (self.settings.n_gen > 0)
            seconds, rows = self._run_parsed(
                run, log, lambda t: parse_bench(t, "jsonl", expected))
            fields = {"bench": tuple(rows)}
            summary = "  ".join(f"{r.test} {r.avg_ts:.1f} t/s" for r in rows)
        else:
            # KLD runs read their chunks from the base logits, whose count _run_base checked.
            seconds, result = (self._run_base(run, log) if run.kind == "base"
                               else self._run_parsed(run, log, parse_perplexity))
            base_logits.touch(base_logits.path_for(self.base.key))
            fields = {"perplexity": result}
            summary = _kld_summary(result)
        self.store.append(RunRecord(
            key=run.key, kind=run.kind, type_k=run.pair.k, type_v=run.pair.v,
            boundary=run.pair.boundary, type_k_boundary=run.pair.k_boundary,
            type_v_boundary=run.pair.v_boundary, policy=run.pair.policy,
            env=dict(run.pair.env), params=run.params,
            command=run.command,
            build_id=self.env.build_id, build_manifest=self.env.build_manifest,
            model=self.env.model, text=self.env.text if run.kind in ("base", "kld") else None,
            log=str(log.relative_to(self.store.root)), started=started,
            seconds=round(seconds, 2), **fields))
        self.progress.end(run.label, seconds, summary)

    def _run_passkey(self, run: Run, log: Path) -> tuple[float, dict[str, Any]]:
        """The pair's trials; each finished one is kept at once, and a run stopped midway
        asks only the trials it had not finished (minutes each at 8K on a CPU)."""
        s, started = self.settings, time.monotonic()
        assert self.env.server is not None
        if s.force:
            self.store.drop_parts(run.key)
        done = self.store.parts(run.key)
        if done:
            self.progress.note(f"{len(done)} trials of this run already asked: going on")

        def keep(outcome: retrieval.Outcome) -> None:
            self.store.add_part(run.key, retrieval.fields(outcome))
            margin = "" if outcome.margin is None else f" ({outcome.margin:+.2f})"
            self.progress.note(f"  key {outcome.trial.key} at {outcome.trial.label}: "
                               f"{'found' if outcome.found else 'lost'}{margin}")

        outcomes = retrieval.passkey(
            self.env.server, Path(self.env.model.path),
            run.pair.args(), log, s.passkey, s.passkey_depths, s.passkey_keys,
            threads=s.threads, extra_args=_backend_args(s), env=_environ(run.pair),
            seed=s.passkey_seed, done=done, on_outcome=keep)
        return time.monotonic() - started, {"passkey": retrieval.summary(outcomes)}

    def _run_parsed(self, run: Run, log: Path, parse: Callable[[str], Any],
                    command: list[str] | None = None) -> tuple[float, Any]:
        """Run a tool (the run's command unless another is given) with the pair's environment
        and parse its log; once more when a successful run's log lacks its end.

        Upstream's tools log from a thread that is not joined at exit
        (ggml-org/llama.cpp#22142), so a run of a `--bin-dir` build can succeed and lose its
        last lines (tqllama's own build prints them all: patch 0039); the rerun gives the
        same numbers.
        """
        cmd, env = command or run.command, _environ(run.pair)
        seconds = run_logged(cmd, log, on_tick=self.progress.tick, env=env)
        try:
            return seconds, _parse_log(log, parse)
        except ParseError as exc:
            if diagnose(log) is not None:
                raise
            self.progress.note(f"incomplete log ({exc}); running it again")
        seconds = run_logged(cmd, log, on_tick=self.progress.tick, env=env)
        return seconds, _parse_log(log, parse)

    def _run_base(self, run: Run, log: Path) -> tuple[float, PerplexityResult]:
        from tqllama.ggufinfo import read_gguf

        target = base_logits.path_for(run.key)
        n_vocab = len(read_gguf(self.env.model.path).metadata.get("tokenizer.ggml.tokens", []))
        size = base_logits.expected_bytes(self.settings.chunks, self.settings.ctx, n_vocab)
        base_logits.check_disk(target, size)
        self.progress.note(f"f16 base logits: up to {size / 2**20:.0f} MiB in {target}")
        # Written under a scratch name: an interrupted base never passes for a finished one.
        partial = target.with_suffix(".partial")
        command = [partial.as_posix() if a == str(target) else a for a in run.command]
        try:
            seconds, result = self._run_parsed(run, log, parse_perplexity, command)
            _check_chunks(result, self.settings, log)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, target)
        for path in base_logits.evict(keep=target):
            self.progress.note(f"evicted old base logits {path.name} (cache limit)")
        return seconds, result


def _environ(pair: CachePair) -> dict[str, str] | None:
    """The tools' environment for a pair: this process's with the pair's settings over it."""
    return {**os.environ, **dict(pair.env)} if pair.env else None


def _tuned(pair: CachePair, settings: SweepSettings, perplexity: Path, model: Path, text: Path,
           progress: Progress) -> CachePair:
    """A `K/V@tuned` pair with its policy made (`tqllama tune` at K/V's mean bits per value,
    kept in the results directory: a sweep run again reuses it); other pairs as they are."""
    if pair.policy != POLICY_TUNED:
        return pair
    from tqllama import tune
    from tqllama.ggufinfo import read_gguf
    from tqllama.policy import read

    path = settings.out / "policies" / f"{pair.slug}.policy"
    bits = (CACHE_TYPES[pair.k].bits_per_value + CACHE_TYPES[pair.v].bits_per_value) / 2
    if path.is_file():
        read(path).check_model(read_gguf(model), path)
        progress.note(f"{pair.label}: the policy {path} made before")
    else:
        progress.note(f"{pair.label}: tuning a policy at {bits:g} bits per value ...")
        path.parent.mkdir(parents=True, exist_ok=True)
        tune.tune(perplexity, model, text, path, types=tune.DEFAULT_TYPES, bits=bits,
                  threads=settings.threads, progress=progress)
    return replace(pair, policy=str(path))


def _kld_summary(result: PerplexityResult) -> str:
    if result.final_ppl is not None:  # the base run
        return f"PPL {result.final_ppl.value:.4f}"
    if result.kld is not None:
        k = result.kld
        return (f"PPL {k.ppl_q.value:.4f}  KLD {k.kld_mean.value:.6f}  "
                f"same top {k.same_top_p_pct.value:.2f}%")
    last = result.kld_chunks[-1]
    return f"PPL {last.ppl.value:.4f}  KLD {last.kld.value:.6f} (under 100 tokens: no summary)"


def prepare(settings: SweepSettings, progress: Progress) -> Sweep:
    """Resolve binaries, model and text; check the cache types; a Sweep ready to execute."""
    s = settings
    check_backend(s.backend)
    if s.ctx < 8 or s.chunks < 1 or s.threads < 1 or s.reps < 1:
        raise TqError("--ctx, --chunks, --threads and --reps must be positive (ctx at least 8)")
    if s.n_prompt < 0 or s.n_gen < 0 or (s.depths and not (s.n_prompt or s.n_gen)):
        raise TqError("--n-prompt and --n-gen must not be negative, nor both 0 with --depths")
    if s.passkey and (not s.passkey_depths or s.passkey_keys < 1):
        raise TqError("--passkey needs at least one --passkey-depths and --passkey-keys >= 1")
    if not s.pairs:
        s = replace(s, pairs=pairs_from(None, []))
    perplexity, bench = tool_path(PERPLEXITY, s), tool_path(BENCH, s)
    pairs, skipped = runnable_pairs(s.pairs, tool_options(perplexity), perplexity)
    for note in skipped:
        progress.note(note)
    if not pairs:
        raise TqError(f"{perplexity} can run none of the pairs asked for ({skipped[0]}): build "
                      "them with `tqllama build` or pass other --cache pairs")
    for p in pairs:  # tune's probes run without the settings: the policy would not be the pair's
        if p.policy == POLICY_TUNED and p.env:
            raise TqError(f"{p.label}: the sweep tunes a policy without environment settings; "
                          "make it with `tqllama tune` in that environment and pass @tuned:FILE")
    model, text = assets.resolve_model(s.model), assets.resolve_text(s.text)
    s = replace(s, pairs=tuple(_tuned(p, s, perplexity, model, text, progress) for p in pairs))
    progress.note(f"hashing {model.name} and {text.name} ...")
    server = tool_path(SERVER, s) if s.passkey else None
    env = Environment(
        perplexity=perplexity, bench=bench, server=server,
        build_id=build_fingerprint([perplexity, bench]),
        build_manifest=manifest_key(s),
        model=FileRef(str(model), sha256_file(model)), text=FileRef(str(text), sha256_file(text)))
    return Sweep(s, env, progress, skipped)
