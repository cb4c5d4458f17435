"""`tqllama tune`: a cache policy for one model, from the measured sensitivity of its layers.

The measure is per-layer KL divergence on the model's exact weights. For every layer, once
for its K cache and once for its V cache, llama-perplexity runs an F32 copy of the model
(tqllama.exactweights) with a policy that puts only that cache in the probe type (turbo4)
and every other cache in f16, against the f16 cache's logits of the same text: what that
one cache costs the model's output. The copy is there because the quantized model itself
cannot tell the caches apart: its matmuls round their activations to 8 bits, so any change
to the cache re-rounds every later layer and costs a KLD set by where it enters, not by its
size (SmolLM2-135M Q4_1: one layer's cache in bf16 costs 0.0038 at layer 0, as much as
q8_0 in every layer; on the copy 1e-6). On the quantized model each probe paid that floor
and a probe's own cost (about 0.0002 on SmolLM2) sank in its noise; on the copy SmolLM2's
caches differ seventy-fold (docs/BENCHMARKS.md, "The floor is the weights' activation
rounding"). The f16 cache is exact on the copy (f32 and f16 caches give the same logits),
so it is the reference. One chunk of 512 tokens ranks the layers as a long run does
(docs/BENCHMARKS.md, "Per-layer cache policies"). Other types are
predicted from the probe's KLD by their quantization error: a cache's KLD grows in
proportion to the mean squared error of its values (second order in a small
perturbation), and the reference quantizers give that error for every type on rotated
Gaussian rows, on which real K and V rows behave alike (docs/REFERENCE.md). For keys that
holds within the turbo types; a K cache of another type under 8 bits (q5_0, q5_1, q4_0,
iq4_nl) lost far more than its Gaussian error on models with large key biases while it was
stored uncentred (before patch 0023), and its error on real keys is measured rather than
assumed: when the candidates include one, the keys are measured once more in the smallest
of them and its kind is predicted from that.

The choice minimises the summed predicted KLD of all layers within a budget of bits per
value (K and V together, weighted by their widths), picking upgrades by the KLD they
remove per bit they cost (the greedy solution of this multiple-choice knapsack, on each
cache's convex hull of (bits, KLD)).

The measurements are kept in $TQLLAMA_CACHE/tune/, keyed by the build, the model, the text
and the measuring settings, so tuning the same model for another budget takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np

from tqllama import paths
from tqllama.bench.parse_perplexity import parse_perplexity
from tqllama.bench.progress import Progress
from tqllama.bench.runner import run_logged
from tqllama.bench.sweep import build_fingerprint
from tqllama.errors import TqError
from tqllama.exactweights import exact_copy
from tqllama.ggufinfo import read_gguf
from tqllama.kvshape import ModelShape, model_shape
from tqllama.plan import Settings, cells
from tqllama.policy import Policy, model_id
from tqllama.source import sha256_file
from tqllama.types import CACHE_TYPES

PROBE = "turbo4"
REFERENCE = "f16"  # every cache but the probed one, and the base logits (see above)
DEFAULT_TYPES = ("q8_0", "turbo4", "turbo3")


@dataclass(frozen=True)
class Sensitivity:
    """The KLD that one layer's K (or V) cache in the probe type costs, all else q8_0."""

    layer: int
    k: float
    v: float
    k_plain: float | None = None  # the K cache in a non-turbo type (plain_probe), if measured


@dataclass(frozen=True)
class LayerChoice:
    layer: int
    k: str
    v: str
    kld_k: float  # predicted for the chosen type
    kld_v: float


@dataclass(frozen=True)
class Choice:
    layers: tuple[LayerChoice, ...]
    bits: float  # mean per value, K and V weighted by their widths
    budget: float
    plain: str | None = None  # the non-turbo type keys were measured in, if any

    @property
    def expected_kld(self) -> float:
        return sum(c.kld_k + c.kld_v for c in self.layers)

    def policy(self, model: str) -> Policy:
        return Policy(model, tuple(c.k for c in self.layers), tuple(c.v for c in self.layers))


@cache
def relative_mse(name: str) -> float:
    """Mean squared error per value of `name` on rotated Gaussian rows of 64 (unit
    variance): the reference quantizers of tqllama.quant; f16 counts as exact."""
    from tqllama.quant.codebook import training_blocks
    from tqllama.quant.reference import names, reference

    if name in ("f16", "bf16", "f32"):
        return 0.0
    ref = reference(name)
    if ref is None:
        known = [t for t in names() if t in CACHE_TYPES]
        raise TqError(f"tune cannot predict {name}'s error: choose --types from f16, "
                      f"{', '.join(known)}")
    rows = training_blocks(4096, seed=7, log_std=False)
    return float(np.mean((ref.roundtrip(rows).astype(np.float64) - rows) ** 2))


def budget_bits(shape: ModelShape, memory_bytes: int, ctx: int) -> float:
    """Bits per value that a KV cache of `memory_bytes` for a `-c ctx` context allows."""
    n_stream, full, swa = cells(shape, ctx, Settings())
    values = sum((swa if layer.swa else full) * n_stream * (layer.k_width + layer.v_width)
                 for layer in shape.layers if layer.cached)
    return memory_bytes * 8 / values


def measure(perplexity: Path, model: Path, text: Path, workdir: Path, *, ctx: int = 512,
            chunks: int = 1, threads: int = 2, probe: str = PROBE,
            sides: str = "kv", progress: Progress | None = None,
            extra_args: Sequence[str] = ()) -> dict[tuple[int, str], float]:
    """Per-layer KLD of the probe type in each of `sides` ("k", "v"), as the module says:
    {(layer, side): KLD}; progress per run."""
    gguf = read_gguf(model)
    shape, ident = model_shape(gguf), model_id(gguf)
    n_layer = shape.n_trunk
    progress = progress or Progress()
    base = workdir / f"{REFERENCE}.kld"
    common = [str(perplexity), "-m", str(model), "-f", str(text), "-c", str(ctx), "--chunks",
              str(chunks), "-t", str(threads), "-fa", "on", "-ctk", REFERENCE, "-ctv", REFERENCE,
              # the KV cache size line, which the parser checks, shows from verbosity 4 on
              "-lv", "4", *extra_args]
    runs: list[tuple[str, int | None, str | None]] = [(f"{REFERENCE} base", None, None)]
    tag = "" if probe == PROBE else f" in {probe}"
    runs += [(f"layer {il} {side.upper()}{tag}", il, side) for il in range(n_layer)
             for side in sides]
    progress.start([("base" if il is None else "layer", ctx * chunks) for _, il, _ in runs], 0)
    klds: dict[tuple[int, str], float] = {}
    for label, il, side in runs:
        progress.begin(label)
        log = workdir / f"{label.replace(' ', '-')}.log"
        if il is None:
            cmd = [*common, "--kl-divergence-base", str(base)]
        else:
            types = {s: [REFERENCE] * n_layer for s in "kv"}
            types[side][il] = probe
            policy = workdir / "probe.policy"
            Policy(ident, tuple(types["k"]), tuple(types["v"])).write(policy)
            cmd = [*common, "--cache-policy", str(policy), "--kl-divergence-base", str(base),
                   "--kl-divergence"]
        seconds = run_logged(cmd, log, on_tick=progress.tick)
        result = parse_perplexity(log.read_text(encoding="utf-8", errors="replace"))
        if il is None:
            progress.end(label, seconds, "")
            continue
        kld = _mean_kld(result)
        klds[(il, side)] = kld
        progress.end(label, seconds, f"KLD {kld:.6f}")
    return klds


def _mean_kld(result) -> float:
    if result.kld is not None:
        return result.kld.kld_mean.value
    # under 100 scored tokens llama-perplexity prints no summary: the chunks' own means
    return float(np.mean([c.kld.value for c in result.kld_chunks]))


def probe_predicts_key(name: str) -> bool:
    """Whether the probe predicts keys in `name`: turbo K caches are quantized like the probe
    (docs/FORMAT.md); types of 8 bits or more lose too little to need their own measure."""
    ct = CACHE_TYPES[name]
    return ct.turbo or ct.bits_per_value >= 8


def plain_probe(ladder: Sequence[str]) -> str | None:
    """The smallest candidate whose keys the probe does not predict, which tune measures."""
    return next((t for t in ladder if not probe_predicts_key(t)), None)


def choose(sensitivity: Sequence[Sensitivity], shape: ModelShape, types: Sequence[str],
           budget: float, probe: str = PROBE,
           error: Callable[[str], float] = relative_mse) -> Choice:
    """Per-layer K and V types from `types` that minimise the predicted KLD within `budget`
    bits per value; TqError when even the smallest types are over it. Keys take a
    non-turbo type under 8 bits only where `k_plain` was measured (in plain_probe(types))."""
    ladder = type_ladder(types, budget)
    plain = plain_probe(ladder)
    bits = [CACHE_TYPES[t].bits_per_value for t in ladder]

    def predicted(kld: float | None, t: str, measured_in: str | None) -> float | None:
        return None if kld is None or measured_in is None else kld * error(t) / error(measured_in)

    items = []  # (layer, side, width, the ladder indices it may take, predicted KLD per type)
    for s, layer in zip(sensitivity, shape.layers, strict=False):
        for side, width in (("k", layer.k_width), ("v", layer.v_width)):
            klds = [predicted(s.v, t, probe) if side == "v" else
                    predicted(s.k, t, probe) if probe_predicts_key(t) else
                    predicted(s.k_plain, t, plain) for t in ladder]
            options = [j for j, kld in enumerate(klds) if kld is not None]
            if not options:
                raise TqError(f"--types {','.join(types)} has no type tune can predict for "
                              "keys: add a turbo type or q8_0")
            items.append((s.layer, side, width, options, klds))
    total_width = sum(w for _, _, w, _, _ in items)
    level = [options[0] for _, _, _, options, _ in items]
    spent = sum(bits[j] * w for j, (_, _, w, _, _) in zip(level, items, strict=True))
    limit = budget * total_width
    if spent > limit + 1e-9:
        raise TqError(f"a budget of {budget:.2f} bits per value is below the smallest types "
                      f"of --types for keys and values ({spent / total_width:.2f} bits): raise "
                      "--bits or --memory, or add a smaller type")
    while True:
        best = None
        for i, (_, _, width, options, klds) in enumerate(items):
            for j in options:
                if j <= level[i]:
                    continue
                cost = (bits[j] - bits[level[i]]) * width
                gain = klds[level[i]] - klds[j]
                if gain <= 0 or spent + cost > limit + 1e-9:
                    continue
                rate = gain / cost
                if best is None or rate > best[0]:
                    best = (rate, i, j, cost)
        if best is None:
            break
        _, i, j, cost = best
        level[i], spent = j, spent + cost
    chosen: dict[tuple[int, str], tuple[str, float]] = {
        (il, side): (ladder[level[i]], items[i][4][level[i]])
        for i, (il, side, _, _, _) in enumerate(items)}
    layers = tuple(LayerChoice(s.layer, *_pair(chosen, s.layer)) for s in sensitivity)
    return Choice(layers, spent / total_width, budget, plain)


def type_ladder(types: Sequence[str], budget: float) -> list[str]:
    """The candidate types by bits per value; TqError for an unknown type or a budget below
    the smallest one."""
    unknown = [t for t in types if t not in CACHE_TYPES]
    if unknown or not types:
        raise TqError(f"unknown cache type {', '.join(unknown) or '(none)'} in --types: use "
                      "names like q8_0,turbo4,turbo3")
    ladder = sorted(set(types), key=lambda t: CACHE_TYPES[t].bits_per_value)
    floor = CACHE_TYPES[ladder[0]].bits_per_value
    if budget < floor - 1e-9:
        raise TqError(f"a budget of {budget:.2f} bits per value is below the smallest type "
                      f"of --types ({ladder[0]}, {floor:g} bits): raise --bits or --memory, or "
                      "add a smaller type")
    return ladder


def _pair(chosen: dict[tuple[int, str], tuple[str, float]], il: int) -> tuple[str, str, float,
                                                                           float]:
    (k, kld_k), (v, kld_v) = chosen[(il, "k")], chosen[(il, "v")]
    return k, v, kld_k, kld_v


def table(sensitivity: Sequence[Sensitivity], choice: Choice, probe: str = PROBE) -> str:
    """The per-layer table `tqllama tune` prints (markdown)."""
    measured = choice.plain and all(s.k_plain is not None for s in sensitivity)
    plain = [f"KLD of {choice.plain} K"] if measured else []
    lines = ["| " + " | ".join(["layer", "K", "V", f"KLD of {probe} K", *plain,
                                f"KLD of {probe} V", "expected KLD"]) + " |",
             "|---:|---|---|---:|" + "---:|" * len(plain) + "---:|---:|"]
    for s, c in zip(sensitivity, choice.layers, strict=True):
        extra = [f"{s.k_plain:.6f}"] if measured else []
        lines.append("| " + " | ".join([str(s.layer), c.k, c.v, f"{s.k:.6f}", *extra,
                                        f"{s.v:.6f}", f"{c.kld_k + c.kld_v:.6f}"]) + " |")
    lines += ["", f"bits per value {choice.bits:.3f} (budget {choice.budget:.3f}), expected "
              f"KLD {choice.expected_kld:.6f} (the sum of the layers' predictions)"]
    return "\n".join(lines) + "\n"


def plot(sensitivity: Sequence[Sensitivity], choice: Choice, out: Path,
         probe: str = PROBE) -> Path:
    """Bars of each layer's K and V sensitivity (log scale), labelled with the chosen types."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TqError("the plot needs matplotlib: pip install 'tqllama[plot]', or drop "
                      "--plot") from None
    x = np.arange(len(sensitivity))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(x)), 4))
    ax.bar(x - 0.2, [max(s.k, 1e-7) for s in sensitivity], 0.4, label=f"K in {probe}")
    ax.bar(x + 0.2, [max(s.v, 1e-7) for s in sensitivity], 0.4, label=f"V in {probe}")
    for xi, c in zip(x, choice.layers, strict=True):
        ax.annotate(f"{c.k}\n{c.v}", (xi, ax.get_ylim()[0]), fontsize=5, ha="center",
                    va="bottom", rotation=90)
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("KLD of one layer's cache")
    ax.set_title(f"per-layer sensitivity; policy: {choice.bits:.2f} bits per value")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def measurements_path(perplexity: Path, model: Path, text: Path, ctx: int, chunks: int,
                      probe: str) -> Path:
    """Where the measurements of one build, model, text and setting are kept: tuning the
    same model for another budget or type list reuses them."""
    key = hashlib.sha256(json.dumps({
        "build": build_fingerprint([perplexity]), "model": sha256_file(model),
        "text": sha256_file(text), "ctx": ctx, "chunks": chunks, "probe": probe,
        "reference": REFERENCE, "weights": "f32",
    }, sort_keys=True).encode()).hexdigest()[:24]
    return paths.cache_dir() / "tune" / f"{key}.json"


def load_measurements(path: Path) -> list[Sensitivity] | None:
    try:
        rows = json.loads(path.read_text())
        return [Sensitivity(int(il), float(k), float(v)) for il, k, v in rows]
    except (OSError, ValueError, TypeError):
        return None  # none kept, or a damaged file: measure again


def _measured(perplexity: Path, model: Path, text: Path, probe: str, sides: str, *,
              eval_ctx: int, chunks: int, threads: int,
              progress: Progress | None) -> list[Sensitivity]:
    """The kept measurements of `probe` in `sides`, or new ones made on the exact copy of
    `model` (then kept); a side not measured reads 0."""
    stored = measurements_path(perplexity, model, text, eval_ctx, chunks,
                               probe if sides == "kv" else f"{probe} {sides}")
    sensitivity = load_measurements(stored)
    if sensitivity is None:
        note = (progress or Progress()).note
        weights = exact_copy(model, on_start=lambda: note(
            f"writing an F32 copy of {model.name} to measure on (once per model)"))
        with tempfile.TemporaryDirectory(prefix="tqllama-tune-") as scratch:
            klds = measure(perplexity, weights, text, Path(scratch), ctx=eval_ctx, chunks=chunks,
                           threads=threads, probe=probe, sides=sides, progress=progress)
        n_layer = max(il for il, _ in klds) + 1
        sensitivity = [Sensitivity(il, klds.get((il, "k"), 0.0), klds.get((il, "v"), 0.0))
                       for il in range(n_layer)]
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps([[s.layer, s.k, s.v] for s in sensitivity]) + "\n")
    return sensitivity


def tune(perplexity: Path, model: Path, text: Path, out: Path, *, types: Sequence[str],
         bits: float | None = None, memory_bytes: int | None = None, ctx: int | None = None,
         eval_ctx: int = 512, chunks: int = 1, threads: int = 2, probe: str = PROBE,
         progress: Progress | None = None) -> tuple[list[Sensitivity], Choice]:
    """Measure, choose, write the policy to `out`; the measurements and the choice."""
    gguf = read_gguf(model)
    shape = model_shape(gguf)
    if (bits is None) == (memory_bytes is None):
        raise TqError("give the budget as --bits B, or as --memory MIB with --ctx N")
    if memory_bytes is not None:
        if not ctx:
            raise TqError("--memory needs --ctx N: the context the memory must hold")
        bits = budget_bits(shape, memory_bytes, ctx)
    assert bits is not None
    ladder = type_ladder(types, bits)  # a bad budget or type fails before any run
    for t in ladder:
        relative_mse(t)
    settings = {"eval_ctx": eval_ctx, "chunks": chunks, "threads": threads, "progress": progress}
    sensitivity = _measured(perplexity, model, text, probe, "kv", **settings)
    plain = plain_probe(ladder)
    if plain is not None:
        keys = _measured(perplexity, model, text, plain, "k", **settings)
        sensitivity = [replace(s, k_plain=p.k) for s, p in zip(sensitivity, keys, strict=True)]
    choice = choose(sensitivity, shape, ladder, bits, probe)
    choice.policy(model_id(gguf)).write(out, comments=[
        f"made by tqllama tune for {model.name}: {choice.bits:.3f} bits per value "
        f"(budget {bits:.3f}), expected KLD {choice.expected_kld:.6f}",
        f"types {','.join(ladder)}; per-layer KLD of {probe}"
        f"{f' (keys also in {plain})' if plain else ''} on {chunks} x {eval_ctx} tokens "
        f"of {text.name}"])
    return sensitivity, choice
